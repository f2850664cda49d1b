"""Reconciliation with APIM's language-model log (aoai_helpers.eventlog.llmlog, aoai_helpers.pipeline.reconcile).

Unit level: records from rows, multi-part assembly, the row update and its guard, repricing,
idempotency, late parts, the watermark, pending vs unmatched, a failing source. End to end
(real loopback sockets, the real ``openai`` SDK): 100 pass-through streamed calls — chat,
completions and Responses, with and without a client-side ``include_usage``, one client
hanging up — end billed with exactly the usage the simulator served; the log delivered again
changes nothing.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import MakeEvent
from sqlalchemy import select
from streams import hang_up_at_first_token
from waiting import wait_until

from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import reconcile_state, token_table
from aoai_helpers.eventlog.llmlog import LlmLogRecord, LocalLlmLog, assemble, record_from_row
from aoai_helpers.exceptions import AoaiHelpersError
from aoai_helpers.local.stack import LocalStack
from aoai_helpers.pipeline.reconcile import reconcile
from aoai_helpers.spec import Reconcile, load_spec
from aoai_helpers.synthetic.traffic import azure_client, v1_client

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SETTINGS = Reconcile()
T0 = datetime(2026, 11, 20, 10, 0)
CHAT = {"messages": [{"role": "user", "content": "Hello there"}], "stream": True}


class ListSource:
    """A source over a fixed list of records (what a Log Analytics query would return)."""

    def __init__(self, records: list[LlmLogRecord], name: str = "test:list") -> None:
        self.records = records
        self.name = name
        self.windows: list[tuple[datetime, datetime]] = []

    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        self.windows.append((start, end))
        return [r for r in self.records if start <= r.time_generated < end]


class FailingSource(ListSource):
    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        raise AoaiHelpersError("the query kept failing: nothing was changed")


def rec(rid: str, prompt: int | None, completion: int | None, total: int | None = None, *, seq: int = 0, when: datetime = T0, model: str | None = "gpt-4o-2024-11-20") -> LlmLogRecord:  # fmt: skip
    return LlmLogRecord(rid, when, seq, prompt, completion, total, model, "gpt-4o", True)


def _stream_event(make_v2: MakeEvent, rid: str, when: datetime = T0, **kw: Any) -> dict[str, Any]:
    return make_v2(
        RequestId=rid,
        ExecTimeUTC=when.isoformat(timespec="milliseconds") + "Z",
        IsStreaming=True,
        Usage=None,
        Model=None,
        Request=CHAT,
        **kw,
    )


def _row(engine: Any, rid: str) -> dict[str, Any]:
    with transaction(engine) as conn:
        return dict(
            conn.execute(select(token_table).where(token_table.c.RequestId == rid)).one()._mapping
        )


# ----------------------------------------------------------------------------- records


def test_records_from_rows_keep_what_can_be_used() -> None:
    row = {
        "TimeGenerated": "2026-11-20T10:00:00.123Z",
        "CorrelationId": "ABC-1",
        "SequenceNumber": 0,
        "PromptTokens": 12,
        "CompletionTokens": "30",
        "TotalTokens": 42.0,
        "ModelName": "gpt-4o-2024-11-20",
        "DeploymentName": "gpt-4o",
        "IsStreamCompletion": True,
    }
    r = record_from_row(row)
    assert r is not None
    assert (r.correlation_id, r.prompt_tokens, r.completion_tokens, r.total_tokens) == (
        "abc-1",
        12,
        30,
        42,
    )
    assert r.time_generated == datetime(2026, 11, 20, 10, 0, 0, 123000) and r.is_stream is True
    assert record_from_row({**row, "CorrelationId": ""}) is None
    assert record_from_row({**row, "TimeGenerated": "yesterday"}) is None
    for bad in (-1, 2**31, "12a", True, 1.5):
        assert record_from_row({**row, "PromptTokens": bad}) is None, bad
    # another column holds the request id (llm_log.correlation_column)
    other = record_from_row({**row, "CorrelationId": None, "RequestId": "X"}, "RequestId")
    assert other is not None and other.correlation_id == "x"


def test_assembly_takes_each_count_once_from_all_parts() -> None:
    parts = [
        rec("a", 100, 0, 100, seq=1),  # the request entry
        rec("a", 100, 250, 350, seq=0),  # the header entry repeats the prompt
        rec("a", None, None, None, seq=2, model=None),  # a message chunk: no counts
        rec("b", None, None, None),  # message parts only: nothing to take
        rec("c", 10, 5, None),  # no total: prompt + completion
        rec("d", 10, 5, 99),  # a larger total is kept (e.g. reasoning counted there)
    ]
    got = assemble(parts)
    assert set(got) == {"a", "c", "d"}
    assert (got["a"].prompt_tokens, got["a"].completion_tokens, got["a"].total_tokens) == (
        100,
        250,
        350,
    )
    assert got["a"].records == 3 and got["a"].model_name == "gpt-4o-2024-11-20"
    assert got["c"].total_tokens == 15 and got["d"].total_tokens == 99
    assert assemble(parts + parts) == got  # delivered twice: the same usage


def test_the_local_log_skips_torn_and_foreign_lines(tmp_path: Path) -> None:
    log = LocalLlmLog(tmp_path / "llm", fsync=False)
    log.append([rec("a", 1, 2), rec("b", 3, 4, when=T0 + timedelta(hours=1))])
    with log.path.open("ab") as f:
        f.write(b'["not", "a", "record"]\n{"CorrelationId": "torn", "TimeGen')
    assert [r.correlation_id for r in log.fetch(T0, T0 + timedelta(hours=2))] == ["a", "b"]
    assert [r.correlation_id for r in log.fetch(T0, T0 + timedelta(minutes=30))] == ["a"]
    assert LocalLlmLog(tmp_path / "none").fetch(T0, T0 + timedelta(days=1)) == []


# ----------------------------------------------------------------------------- the row update


def test_a_prompt_only_row_takes_the_logged_usage_and_keeps_what_it_had(
    engine: Any, make_v2: MakeEvent, ingest_events: Any
) -> None:
    ingest_events(engine, _stream_event(make_v2, "r1"))
    before = _row(engine, "r1")
    assert before["UsageSource"] == "prompt_only" and before["CompletionTokens"] == 0
    source = ListSource([rec("r1", 9, 250, 259)])
    result = reconcile(engine, source, SETTINGS, until=T0 + timedelta(hours=1))
    assert (result.upgraded, result.from_prompt_only, result.calls_logged) == (1, 1, 1)
    after = _row(engine, "r1")
    assert after["UsageSource"] == "reconciled"
    assert (after["PromptTokens"], after["CompletionTokens"], after["TotalTokens"]) == (9, 250, 259)
    assert (after["PriorUsageSource"], after["PriorPromptTokens"]) == (
        "prompt_only",
        before["PromptTokens"],
    )
    assert (after["PriorCompletionTokens"], after["PriorCost"]) == (0, before["Cost"])
    # repriced at gpt-4o's default rates (USD per 1M: 2.50 in, 10.00 out)
    assert after["Cost"] == pytest.approx(9 * 2.5e-6 + 250 * 10e-6)
    assert result.added_cost == pytest.approx(after["Cost"] - before["Cost"])
    # a second run, and the same records delivered again, change nothing
    again = reconcile(
        engine, ListSource(source.records * 2), SETTINGS, until=T0 + timedelta(hours=1)
    )
    assert (again.upgraded, again.corrected, again.unchanged) == (0, 0, 1)
    assert _row(engine, "r1") == after


def test_late_parts_raise_a_reconciled_row_but_never_lower_it(
    engine: Any, make_v2: MakeEvent, ingest_events: Any
) -> None:
    ingest_events(engine, _stream_event(make_v2, "r2"))
    end = T0 + timedelta(hours=1)
    reconcile(engine, ListSource([rec("r2", 9, 0, 9, seq=1)]), SETTINGS, until=end)
    assert _row(engine, "r2")["CompletionTokens"] == 0
    later = reconcile(
        engine, ListSource([rec("r2", 9, 0, 9, seq=1), rec("r2", 9, 120, 129)]), SETTINGS, until=end
    )
    assert later.corrected == 1
    row = _row(engine, "r2")
    assert (row["CompletionTokens"], row["TotalTokens"], row["PriorUsageSource"]) == (
        120,
        129,
        "prompt_only",
    )
    reconcile(engine, ListSource([rec("r2", 5, 60, 65)]), SETTINGS, until=end)  # smaller: ignored
    assert _row(engine, "r2")["CompletionTokens"] == 120


def test_reported_and_unbilled_rows_are_never_touched(
    engine: Any, make_v2: MakeEvent, ingest_events: Any
) -> None:
    ingest_events(
        engine,
        make_v2(RequestId="rep", ExecTimeUTC="2026-11-20T10:00:00Z"),
        make_v2(RequestId="bad", ExecTimeUTC="2026-11-20T10:00:00Z", StatusCode=429, Usage=None),
    )
    rows = {rid: _row(engine, rid) for rid in ("rep", "bad")}
    source = ListSource([rec("rep", 1, 1), rec("bad", 500, 500)])
    result = reconcile(engine, source, SETTINGS, until=T0 + timedelta(hours=1))
    assert (result.upgraded, result.unchanged) == (0, 2)
    assert {rid: _row(engine, rid) for rid in rows} == rows


def test_an_unknown_model_takes_the_logged_one_and_a_v1_row_never_matches(
    engine: Any, make_v2: MakeEvent, make_v1: MakeEvent, ingest_events: Any
) -> None:
    ingest_events(engine, _stream_event(make_v2, "r3", DeploymentName="my-deployment"))
    assert _row(engine, "r3")["ModelKnown"] == 0 and _row(engine, "r3")["Cost"] is None
    reconcile(engine, ListSource([rec("r3", 9, 10, 19)]), SETTINGS, until=T0 + timedelta(hours=1))
    row = _row(engine, "r3")
    assert (row["ModelName"], row["ModelKnown"], row["PriorModelName"]) == (
        "gpt-4o",
        1,
        "my-deployment",
    )
    assert row["Cost"] == pytest.approx(9 * 2.5e-6 + 10 * 10e-6)  # priced now


def test_a_failing_source_changes_nothing(
    engine: Any, make_v2: MakeEvent, ingest_events: Any
) -> None:
    ingest_events(engine, _stream_event(make_v2, "r4"))
    before = _row(engine, "r4")
    with pytest.raises(AoaiHelpersError, match="nothing was changed"):
        reconcile(engine, FailingSource([]), SETTINGS, until=T0 + timedelta(hours=1))
    assert _row(engine, "r4") == before
    with transaction(engine) as conn:
        assert conn.execute(select(reconcile_state)).all() == []


def test_the_window_follows_the_watermark_and_the_grace_splits_what_is_left(
    engine: Any, make_v2: MakeEvent, ingest_events: Any
) -> None:
    old, fresh = T0 - timedelta(hours=10), T0 - timedelta(hours=1)
    ingest_events(
        engine, _stream_event(make_v2, "old", old), _stream_event(make_v2, "fresh", fresh)
    )
    source = ListSource([])
    first = reconcile(engine, source, SETTINGS, until=T0)
    # no watermark yet: from the oldest provisional row (less the clock margin)
    assert source.windows[0][0] == old - timedelta(minutes=5)
    assert (first.pending.calls, first.unmatched.calls) == (1, 1)  # 6 h grace
    assert first.unmatched.oldest == old and first.unmatched.cost > 0
    assert "1 unmatched past it" in first.summary()
    second = reconcile(engine, source, SETTINGS, until=T0 + timedelta(minutes=30))
    # from the last end, less the lookback (records arrive late)
    assert second.start == T0 - timedelta(minutes=SETTINGS.lookback_minutes)
    # an explicit older window never moves the watermark back
    reconcile(engine, source, SETTINGS, since=old, until=old + timedelta(minutes=1))
    with transaction(engine) as conn:
        mark = conn.execute(select(reconcile_state.c.WatermarkUTC)).scalar_one()
    assert mark == T0 + timedelta(minutes=30)


# ----------------------------------------------------------------------------- end to end


def _streamed_calls(stack: LocalStack, count: int) -> list[tuple[str, bool, dict[str, int] | None]]:
    """``count`` streamed calls (chat, completions, Responses; with and without a client-side
    include_usage), round-robin over the BUs; what each client was told."""
    rng = random.Random(5)
    seen: list[tuple[str, bool, dict[str, int] | None]] = []
    keys = list(stack.info.keys.values())
    for i in range(count):
        key = keys[i % len(keys)]
        az, v1 = azure_client(stack.info, key), v1_client(stack.info, key)
        kind = ("chat", "completions", "responses")[i % 3]
        usage_asked = kind != "responses" and rng.random() < 0.5
        options: Any = {"include_usage": True} if usage_asked else openai.omit
        told = None
        prompt = f"Question {i}: " + " ".join(
            rng.choice(["budget", "risk", "plan"]) for _ in range(i % 17)
        )
        if kind == "chat":
            events = az.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": prompt}],
                stream=True,
                stream_options=options,
            )
            for e in events:
                told = e.usage.model_dump() if e.usage else told
        elif kind == "completions":
            events = az.completions.create(
                model="gpt-4o-mini", prompt=prompt, stream=True, stream_options=options
            )
            for e in events:
                told = e.usage.model_dump() if e.usage else told
        else:
            for e in v1.responses.create(model="gpt-4.1", input=prompt, stream=True):
                if e.type == "response.completed" and e.response.usage:
                    u = e.response.usage
                    told = {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens}
        az.close()
        v1.close()
        seen.append((kind, usage_asked, told))
    return seen


@pytest.mark.sqlite_only
def test_pass_through_streams_end_billed_exactly_what_the_simulator_served(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    with LocalStack(SPEC, db_url=db, capture="passthrough", state_dir=tmp_path / "state") as stack:
        seen = _streamed_calls(stack, 99)
        hang_up_at_first_token(
            stack.info.gateway_url, stack.info.keys["bu-rnd"], "tell me a long story"
        )
        sim = stack.simulator
        assert sim is not None  # it notices the hang-up at its next token
        wait_until(lambda: len(sim.records) == 100, 120, "the simulator to record 100 calls")
        assert stack.wait_reconciled(timeout=120) is not None
        records = {r.response_id: r for r in sim.records}
        log = stack.llm_log
    engine = engine_from_url(db)
    try:
        with transaction(engine) as conn:
            rows = [
                dict(r._mapping)
                for r in conn.execute(select(token_table).order_by(token_table.c.Id))
            ]
        assert len(rows) == 100 and len(records) == 100
        assert Counter(r["UsageSource"] for r in rows) == {"reconciled": 100}  # none prompt_only
        served = [r.usage for r in sim.records]
        billed = [(r["PromptTokens"], r["CompletionTokens"]) for r in rows]
        # calls are sequential: rows and simulator records are in the same order
        for (prompt, completion), usage, row in zip(billed, served, rows, strict=True):
            assert usage is not None and prompt == usage["prompt_tokens"], row
            if (
                row is rows[-1]
            ):  # the client that hung up: at least what it got, at most what was sent
                assert 1 <= completion <= usage["completion_tokens"]
            else:
                assert completion == usage["completion_tokens"] > 0, row
        # what a client was told in its usage chunk is what it is billed
        for (kind, asked, told), row in zip(seen, rows, strict=False):
            if told is not None:
                assert (row["PromptTokens"], row["CompletionTokens"]) == (
                    told["prompt_tokens"],
                    told["completion_tokens"],
                ), (kind, asked)
        assert sum(asked for _, asked, _ in seen) > 10 and sum(not a for _, a, _ in seen) > 10
        # the log delivered again (every record twice) changes nothing
        before = rows
        doubled = ListSource(log.fetch(T0 - timedelta(days=3650), T0 + timedelta(days=36500)) * 2)
        again = reconcile(engine, doubled, SETTINGS)
        assert again.upgraded == again.corrected == 0 and again.unchanged == 100
        with transaction(engine) as conn:
            after = [
                dict(r._mapping)
                for r in conn.execute(select(token_table).order_by(token_table.c.Id))
            ]
        assert after == before
    finally:
        engine.dispose()
