"""Tests for aoai_helpers.pipeline.ingest: the batch pipeline, dead letters, idempotency, file reading.

Everything runs against a real SQLite file (``engine`` / ``empty_engine`` from conftest);
database failures are real ones (a read-only database, a lock held by another connection, a
trigger that aborts the transaction half-way), not mocks.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from vectors import EXAMPLE_MESSAGES  # the cookbook conversation: 124 prompt tokens on gpt-4o

import aoai_helpers.pipeline.ingest as ingest_module
from aoai_helpers import clock
from aoai_helpers.core.events import v1_request_id
from aoai_helpers.core.pricing import Rate, RateBook
from aoai_helpers.core.tokens import count_completion_text, count_prompt, get_encoding
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import dead_letter, rate_table, token_table
from aoai_helpers.exceptions import DatabaseError, InputError
from aoai_helpers.pipeline.files import iter_file_events
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent
from aoai_helpers.pipeline.service import ingest_files

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

MakeEvent = Callable[..., dict[str, Any]]
TokenRows = Callable[[Engine], list[dict[str, Any]]]

# Default gpt-4o rate (aoai_helpers/data/default_rates.csv), USD per token.
GPT4O_INPUT, GPT4O_CACHED, GPT4O_OUTPUT = 2.50 / 1e6, 1.25 / 1e6, 10.00 / 1e6

CHAT: list[dict[str, str]] = [
    {"role": "system", "content": "You are an AI assistant that helps people find information."},
    {"role": "user", "content": "Summarise the quarterly revenue forecast in three bullets."},
]


# ----------------------------------------------------------------------------- helpers


def body(event: dict[str, Any]) -> bytes:
    """The event as the gateway sends it: compact UTF-8 JSON."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def raw(*items: dict[str, Any] | bytes, prefix: str = "b") -> list[RawEvent]:
    """RawEvents labelled ``prefix:1``, ``prefix:2`` … (dicts are encoded, bytes kept as is)."""
    return [
        RawEvent(item if isinstance(item, bytes) else body(item), f"{prefix}:{i}")
        for i, item in enumerate(items, start=1)
    ]


def count(engine: Engine, table: Any) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def dead_rows(engine: Engine) -> list[dict[str, Any]]:
    with transaction(engine) as conn:
        rows = conn.execute(select(dead_letter).order_by(dead_letter.c.Id)).mappings().all()
    return [dict(r) for r in rows]


def gpt4o_rate_id(engine: Engine) -> int:
    with transaction(engine) as conn:
        return int(
            conn.execute(
                select(rate_table.c.RateId).where(rate_table.c.ModelName == "gpt-4o")
            ).scalar_one()
        )


def truncated_event(make_v2: MakeEvent) -> bytes:
    """A real v2 event with a huge captured request, cut by log-to-eventhub at 200 KB."""
    huge = make_v2(Request={"messages": [{"role": "user", "content": "x" * 210_000}]})
    cut = body(huge)[: 200 * 1024]
    assert len(cut) == 200 * 1024
    return cut


def sqlite_path(engine: Engine) -> str:
    """The SQLite file behind ``engine``: tests that lock or break it from a second sqlite3
    connection are marked ``sqlite_only`` (PostgreSQL outages are in tests/faults/)."""
    assert engine.dialect.name == "sqlite", "mark the test sqlite_only"
    path = engine.url.database
    assert path
    return path


@pytest.fixture
def v1_times() -> Iterator[str]:
    """Distinct v1 ``ExecTimeUTC`` values (v1 ids are content hashes)."""
    start = datetime(2026, 11, 6, 9, 0, 0)
    return (f"{start + timedelta(seconds=i):%Y-%m-%d %H:%M:%S}" for i in range(10_000))


# ----------------------------------------------------------------------------- mixed batches


def test_mixed_batch_stores_good_events_and_dead_letters_bad_ones(
    engine: Engine, make_v2: MakeEvent, make_v1: MakeEvent, v1_times: Iterator[str]
) -> None:
    good = [make_v2(), make_v2(), make_v2(), make_v1(ExecTimeUTC=next(v1_times))]
    truncated = truncated_event(make_v2)
    not_json = b"this is not JSON {"
    wrong = make_v2(IsStreaming="yes")  # a field of the wrong type
    wrong_body = body(wrong)
    batch = raw(good[0], truncated, good[1], not_json, good[2], wrong_body, good[3])

    result = Ingestor(engine).ingest_batch(batch)

    assert (result.received, result.stored, result.duplicates, result.dead_lettered) == (7, 4, 0, 3)
    assert count(engine, token_table) == 4
    with transaction(engine) as conn:
        ids = set(conn.execute(select(token_table.c.RequestId)).scalars())
    assert ids == {e["RequestId"] for e in good[:3]} | {v1_request_id(body(good[3]))}

    dead = {d["Source"]: d for d in dead_rows(engine)}
    assert set(dead) == {"b:2", "b:4", "b:6"}
    for source, sent in (("b:2", truncated), ("b:4", not_json), ("b:6", wrong_body)):
        assert dead[source]["RawBody"] == sent  # byte-identical
        assert dead[source]["RawSize"] == len(sent)
        assert isinstance(dead[source]["ReceivedAtUTC"], datetime)
    assert dead["b:2"]["Reason"].startswith("truncated: 204800 bytes")
    assert dead["b:4"]["Reason"].startswith("not JSON")
    assert dead["b:6"]["Reason"] == "IsStreaming must be true or false, not str"
    assert dead["b:6"]["RequestId"] == wrong["RequestId"]
    assert dead["b:2"]["RequestId"] is None


def test_json_that_is_not_an_object_is_dead_lettered(engine: Engine) -> None:
    result = Ingestor(engine).ingest_batch(raw(b'["an", "array"]', b"42"))
    assert (result.stored, result.dead_lettered) == (0, 2)
    reasons = sorted(d["Reason"] for d in dead_rows(engine))
    assert reasons == ["not a JSON object (got int)", "not a JSON object (got list)"]


# ----------------------------------------------------------------------------- idempotency


def test_same_batch_twice_stores_nothing_the_second_time(
    engine: Engine, make_v2: MakeEvent, make_v1: MakeEvent, v1_times: Iterator[str]
) -> None:
    events = [make_v2(), make_v2(), make_v2(), make_v1(ExecTimeUTC=next(v1_times))]
    events.append(make_v1(ExecTimeUTC=next(v1_times)))
    ingestor = Ingestor(engine)

    first = ingestor.ingest_batch(raw(*events))
    second = ingestor.ingest_batch(raw(*events))

    assert (first.stored, first.duplicates) == (5, 0)
    assert (second.received, second.stored, second.duplicates, second.dead_lettered) == (5, 0, 5, 0)
    assert count(engine, token_table) == 5


def test_duplicates_inside_one_batch_are_stored_once(
    engine: Engine, make_v2: MakeEvent, make_v1: MakeEvent
) -> None:
    v2, other, v1 = make_v2(), make_v2(), make_v1()
    result = Ingestor(engine).ingest_batch(raw(v2, v1, v2, other, v1, v2))
    assert (result.received, result.stored, result.duplicates) == (6, 3, 3)
    assert count(engine, token_table) == 3


def test_v2_redelivered_with_same_request_id_counts_as_duplicate(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    first = make_v2()
    retry = make_v2(RequestId=first["RequestId"], Usage={"prompt_tokens": 999})
    ingestor = Ingestor(engine)
    assert ingestor.ingest_batch(raw(first)).stored == 1
    result = ingestor.ingest_batch(raw(retry))
    assert (result.stored, result.duplicates) == (0, 1)
    assert [r["PromptTokens"] for r in token_rows(engine)] == [100]  # first delivery wins


def test_v1_events_redelivered_are_not_billed_twice(
    engine: Engine, make_v1: MakeEvent, token_rows: TokenRows
) -> None:
    event = make_v1()
    ingestor = Ingestor(engine)
    assert ingestor.ingest_batch(raw(event)).stored == 1

    again = ingestor.ingest_batch(raw(body(event), body(event) + b"\r\n"))
    assert (again.stored, again.duplicates) == (0, 2)

    later = ingestor.ingest_batch(raw(make_v1(ExecTimeUTC="2026-11-05 10:00:01")))
    assert later.stored == 1  # a different call (another second) is billed
    rows = token_rows(engine)
    assert len(rows) == 2
    assert rows[0]["RequestId"] == v1_request_id(body(event))
    assert [r["TotalTokens"] for r in rows] == [50, 50]


def test_same_jsonl_file_ingested_twice_changes_nothing(
    engine: Engine, make_v2: MakeEvent, make_v1: MakeEvent, tmp_path: Path
) -> None:
    lines = [body(make_v2()) for _ in range(4)] + [body(make_v1()), b"{not json"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    first = ingest_files(engine, [path], batch_size=2)
    second = ingest_files(engine, [path], batch_size=2)

    assert (first.received, first.stored, first.duplicates, first.dead_lettered) == (6, 5, 0, 1)
    assert (second.received, second.stored, second.duplicates, second.dead_lettered) == (
        6,
        0,
        5,
        1,
    )
    assert count(engine, token_table) == 5
    assert count(engine, dead_letter) == 1
    assert dead_rows(engine)[0]["Source"] == "events.jsonl:6"


def test_poison_event_redelivered_is_dead_lettered_once(engine: Engine) -> None:
    poison = b'{"EventVersion": 3, "RequestId": "abc"}'
    ingestor = Ingestor(engine)

    within = ingestor.ingest_batch(raw(poison, poison))
    across = ingestor.ingest_batch(raw(poison))

    assert within.dead_lettered == 2  # counted each time it arrives …
    assert across.dead_lettered == 1
    assert count(engine, dead_letter) == 1  # … stored once
    (row,) = dead_rows(engine)
    assert row["RawBody"] == poison
    assert row["RequestId"] == "abc"
    assert row["Reason"].startswith("unsupported EventVersion 3")


# ----------------------------------------------------------------------------- row contents


def test_v2_reported_row_has_every_column(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    event = make_v2(
        ExecTimeUTC="2026-11-05T10:11:12.345Z",
        IsStreaming=True,
        Usage={
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "cached_tokens": 256,
            "reasoning_tokens": 40,
        },
    )
    before = clock.system_utcnow()
    result = Ingestor(engine).ingest_batch(raw(event))
    after = clock.system_utcnow()
    assert (result.stored, result.estimated, result.prompt_only, result.unpriced) == (1, 0, 0, 0)
    assert result.unknown_models == set()

    (row,) = token_rows(engine)
    assert before <= row.pop("IngestedAtUTC") <= after  # naive UTC
    cost = row.pop("Cost")
    assert cost == pytest.approx(0.00568, rel=1e-12, abs=0)  # (944*2.50 + 256*1.25 + 300*10)/1M
    assert cost == 944 * GPT4O_INPUT + 256 * GPT4O_CACHED + 300 * GPT4O_OUTPUT
    assert row.pop("Id") == 1
    assert row == {
        "ExecTimeUTC": datetime(2026, 11, 5, 10, 11, 12, 345000),
        "ExecDateUTC": datetime(2026, 11, 5),
        "GatewayRegion": event["GatewayRegion"],
        "GatewayServiceName": event["GatewayServiceName"],
        "SubscriptionId": event["SubscriptionId"],
        "SubscriptionName": event["SubscriptionName"],
        "UserName": event["UserName"],
        "UserEmail": event["UserEmail"],
        "ProductName": event["ProductName"],
        "ApiName": event["ApiName"],
        "OperationId": "ChatCompletions_Create",
        "ModelName": "gpt-4o",
        "IsStreaming": 1,
        "PromptTokens": 1200,
        "CompletionTokens": 300,
        "TotalTokens": 1500,
        "RequestId": event["RequestId"],
        "EventVersion": 2,
        "Operation": "chat",
        "DeploymentName": "gpt-4o",
        "ApiVersion": "2024-10-21",
        "StatusCode": 200,
        "ReportedModel": "gpt-4o-2024-11-20",
        "CachedTokens": 256,
        "ReasoningTokens": 40,
        "UsageSource": "reported",
        "EstimateEncoding": None,
        "EstimateQuality": None,
        "ModelKnown": 1,
        "Currency": "USD",
        "RateId": gpt4o_rate_id(engine),
        # only reconciliation writes these (aoai_helpers.pipeline.reconcile)
        "PriorUsageSource": None,
        "PriorPromptTokens": None,
        "PriorCompletionTokens": None,
        "PriorTotalTokens": None,
        "PriorModelName": None,
        "PriorCost": None,
        "ReconciledAtUTC": None,
    }


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-11-05T23:30:00+02:00", datetime(2026, 11, 5, 21, 30)),
        ("2026-11-05T23:30:00-02:00", datetime(2026, 11, 6, 1, 30)),
    ],
)
def test_exec_time_with_offset_is_stored_as_utc(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows, sent: str, stored: datetime
) -> None:
    Ingestor(engine).ingest_batch(raw(make_v2(ExecTimeUTC=sent)))
    (row,) = token_rows(engine)
    assert row["ExecTimeUTC"] == stored
    assert row["ExecDateUTC"] == datetime(stored.year, stored.month, stored.day)


def test_v1_streamed_capture_is_estimated(
    engine: Engine, make_v1: MakeEvent, token_rows: TokenRows
) -> None:
    answer = 'Line one:\n\t"quoted" \\ back\\slash\n\n{"json": [1, 2]} \u00e9t\u00e9 \U0001f600'
    escaped = json.dumps(answer, ensure_ascii=False)[1:-1]  # as the original policy's regex kept it
    request = {"messages": CHAT, "stream": True, "model": "gpt-4o"}
    event = make_v1(Request=request, ResponseString=escaped)

    result = Ingestor(engine).ingest_batch(raw(event))

    assert (result.stored, result.estimated, result.prompt_only) == (1, 1, 0)
    (row,) = token_rows(engine)
    prompt = count_prompt("chat", request, "gpt-4o").tokens
    completion = count_completion_text([answer], "gpt-4o")
    assert completion != count_completion_text([escaped], "gpt-4o")  # the escapes were undone
    assert row["UsageSource"] == "estimated"
    assert row["EstimateEncoding"] == "o200k_base"
    assert count_prompt("chat", request, "gpt-4o").quality == "exact"
    assert row["EstimateQuality"] == "approximate"  # the output: sometimes one token above it
    assert (row["PromptTokens"], row["CompletionTokens"], row["TotalTokens"]) == (
        prompt,
        completion,
        prompt + completion,
    )
    assert row["IsStreaming"] == 1
    assert (row["EventVersion"], row["StatusCode"], row["Operation"]) == (1, 200, "chat")
    assert row["RequestId"] == v1_request_id(body(event))
    assert row["ExecTimeUTC"] == datetime(2026, 11, 5, 10, 0, 0)
    assert row["ModelName"] == "gpt-4o"
    assert row["Cost"] == pytest.approx(prompt * GPT4O_INPUT + completion * GPT4O_OUTPUT, rel=1e-12)


def test_v2_pass_through_stream_is_prompt_only(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    request = {"messages": CHAT, "stream": True}
    event = make_v2(IsStreaming=True, Usage=None, Model=None, Request=request)

    result = Ingestor(engine).ingest_batch(raw(event))

    assert (result.stored, result.prompt_only, result.estimated) == (1, 1, 0)
    assert "1 prompt-only" in result.summary()
    (row,) = token_rows(engine)
    prompt = count_prompt("chat", request, "gpt-4o").tokens
    assert prompt > 0
    assert row["UsageSource"] == "prompt_only"
    assert (row["PromptTokens"], row["CompletionTokens"], row["TotalTokens"]) == (prompt, 0, prompt)
    assert row["ModelName"] == "gpt-4o"  # from the deployment name
    assert row["ReportedModel"] == "gpt-4o"
    assert row["Cost"] == pytest.approx(prompt * GPT4O_INPUT, rel=1e-12)


def test_throttled_call_is_unbilled_with_cost_zero(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    result = Ingestor(engine).ingest_batch(raw(make_v2(StatusCode=429, Usage=None, Model=None)))
    assert (result.stored, result.unpriced) == (1, 0)
    (row,) = token_rows(engine)
    assert row["UsageSource"] == "unbilled"
    assert row["StatusCode"] == 429
    assert (row["PromptTokens"], row["CompletionTokens"], row["TotalTokens"]) == (0, 0, 0)
    assert row["Cost"] == 0.0
    assert row["Cost"] is not None
    assert row["RateId"] is None


def test_unknown_model_is_unpriced_never_free(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    event = make_v2(Model="my-deployment", DeploymentName="my-deployment")
    result = Ingestor(engine).ingest_batch(raw(event, make_v2()))

    assert (result.stored, result.unpriced) == (2, 1)
    assert result.unknown_models == {"my-deployment"}
    assert result.summary() == "2 received: 2 stored, 0 duplicates, 0 dead-lettered (1 unpriced)"
    rows = {r["RequestId"]: r for r in token_rows(engine)}
    row = rows[event["RequestId"]]
    assert row["ModelName"] == "my-deployment"
    assert row["ModelKnown"] == 0
    assert row["Cost"] is None
    assert row["Currency"] is None
    assert row["RateId"] is None
    assert row["PromptTokens"] == 100  # usage is kept even though it has no price


def test_known_model_without_rate_is_unpriced(
    empty_engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    result = Ingestor(empty_engine).ingest_batch(raw(make_v2()))
    assert (result.stored, result.unpriced) == (1, 1)
    (row,) = token_rows(empty_engine)
    assert (row["ModelName"], row["ModelKnown"], row["Cost"]) == ("gpt-4o", 1, None)


def test_overlong_strings_are_truncated_to_the_column_length(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    email = "a" * 68 + "@example.com"
    service = "s" * 200
    assert len(email) == 80
    result = Ingestor(engine).ingest_batch(
        raw(make_v2(UserEmail=email, GatewayServiceName=service))
    )
    assert (result.stored, result.dead_lettered) == (1, 0)
    (row,) = token_rows(engine)
    assert row["UserEmail"] == email[:50]  # nvarchar(50)
    assert row["GatewayServiceName"] == service[:150]  # nvarchar(150)


# ----------------------------------------------------------------------------- counting


def test_original_method_counts_about_30_percent_low() -> None:
    """The original function joined the contents and counted them with cl100k_base."""
    ours = count_prompt("chat", {"messages": EXAMPLE_MESSAGES}, "gpt-4o").tokens
    cl100k = get_encoding("cl100k_base")
    original = len(cl100k.encode(" ".join(m["content"] for m in EXAMPLE_MESSAGES)))

    assert ours == 124  # the count the API reported for gpt-4o
    assert original == 88
    assert original / ours <= 0.75  # at least 25 % low
    assert 1 - original / ours == pytest.approx(0.29, abs=0.01)


# ----------------------------------------------------------------------------- database failures


def test_unopenable_database_raises_database_error(tmp_path: Path, make_v2: MakeEvent) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    engine = create_engine(f"sqlite:///{blocker}/sub/usage.db")
    try:
        with pytest.raises(DatabaseError, match="unable to open database file") as info:
            Ingestor(engine).ingest_batch(raw(make_v2()))
    finally:
        engine.dispose()
    assert str(info.value).startswith("database unreachable or busy (sqlite:///")
    assert blocker.read_text() == "a regular file"


@pytest.mark.sqlite_only
def test_read_only_database_raises_and_commits_nothing(
    engine: Engine, make_v2: MakeEvent, v1_times: Iterator[str]
) -> None:
    path = sqlite_path(engine)
    read_only = engine_from_url(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with pytest.raises(DatabaseError, match="readonly database"):
            Ingestor(read_only).ingest_batch(raw(make_v2(), make_v2(), b"garbage"))
    finally:
        read_only.dispose()
    assert count(engine, token_table) == 0
    assert count(engine, dead_letter) == 0


@pytest.mark.sqlite_only
def test_locked_database_rolls_back_then_reingest_stores_everything_once(
    engine: Engine, make_v2: MakeEvent
) -> None:
    path = sqlite_path(engine)
    batch = raw(make_v2(), make_v2(), make_v2(), b"poison")
    impatient = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        ingestor = Ingestor(impatient)
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseError, match="database is locked"):
            ingestor.ingest_batch(batch)
        locker.execute("ROLLBACK")
        assert count(engine, token_table) == 0
        assert count(engine, dead_letter) == 0

        retry = ingestor.ingest_batch(batch)
        again = ingestor.ingest_batch(batch)
    finally:
        locker.close()
        impatient.dispose()
    assert (retry.stored, retry.duplicates, retry.dead_lettered) == (3, 0, 1)
    assert (again.stored, again.duplicates) == (0, 3)
    assert count(engine, token_table) == 3
    assert count(engine, dead_letter) == 1


@pytest.mark.sqlite_only
def test_failure_half_way_rolls_back_rows_already_inserted(
    engine: Engine, make_v2: MakeEvent
) -> None:
    """Rows are inserted before dead letters; a dead-letter insert that fails undoes them."""
    path = sqlite_path(engine)
    batch = raw(make_v2(), make_v2(), b"poison")
    admin = sqlite3.connect(path, isolation_level=None)
    try:
        admin.execute(
            "CREATE TRIGGER fail_dead_letter BEFORE INSERT ON IngestDeadLetter "
            "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
        )
        with pytest.raises(DatabaseError, match=r"disk full \(simulated\)"):
            Ingestor(engine).ingest_batch(batch)
        assert count(engine, token_table) == 0
        admin.execute("DROP TRIGGER fail_dead_letter")
    finally:
        admin.close()

    result = Ingestor(engine).ingest_batch(batch)
    assert (result.stored, result.dead_lettered) == (2, 1)
    assert Ingestor(engine).ingest_batch(batch).stored == 0
    assert count(engine, token_table) == 2
    assert count(engine, dead_letter) == 1


# ----------------------------------------------------------------------------- deployment map


@pytest.mark.parametrize("deployment", ["chat-prod", "Chat-Prod"])
def test_deployment_models_prices_a_prompt_only_event(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows, deployment: str
) -> None:
    request = {"messages": CHAT, "stream": True}
    event = make_v2(
        DeploymentName=deployment, Model=None, Usage=None, IsStreaming=True, Request=request
    )
    result = Ingestor(engine, deployment_models={"chat-prod": "gpt-4o"}).ingest_batch(raw(event))

    assert (result.stored, result.prompt_only, result.unpriced) == (1, 1, 0)
    (row,) = token_rows(engine)
    prompt = count_prompt("chat", request, "gpt-4o").tokens
    assert (row["ModelName"], row["ModelKnown"], row["UsageSource"]) == ("gpt-4o", 1, "prompt_only")
    assert row["PromptTokens"] == prompt
    assert row["Cost"] == pytest.approx(prompt * GPT4O_INPUT, rel=1e-12)
    assert row["RateId"] == gpt4o_rate_id(engine)


def test_without_deployment_models_the_deployment_name_is_unpriced(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    event = make_v2(
        DeploymentName="chat-prod",
        Model=None,
        Usage=None,
        IsStreaming=True,
        Request={"messages": CHAT, "stream": True},
    )
    result = Ingestor(engine).ingest_batch(raw(event))
    assert (result.stored, result.unpriced) == (1, 1)
    (row,) = token_rows(engine)
    assert (row["ModelName"], row["ModelKnown"], row["Cost"]) == ("chat-prod", 0, None)


def test_default_model_decides_tokenizer_and_rate_of_events_that_name_no_model(
    engine: Engine, make_v1: MakeEvent, token_rows: TokenRows
) -> None:
    """A v1 stream of a gpt-35-turbo deployment whose requests carry no ``model``."""
    request = {"messages": EXAMPLE_MESSAGES, "stream": True}
    event = make_v1(Request=request, ResponseString="Things are fine.")
    with transaction(engine) as conn:
        from aoai_helpers.pipeline.reprice import set_rates

        set_rates(conn, [Rate("gpt-35-turbo", 0.5 / 1e6, 1.5 / 1e6)])
    result = Ingestor(engine, default_model="gpt-35-turbo").ingest_batch(raw(event))

    assert (result.stored, result.estimated, result.unpriced) == (1, 1, 0)
    (row,) = token_rows(engine)
    assert (row["ModelName"], row["ModelKnown"], row["EstimateEncoding"]) == (
        "gpt-35-turbo",
        1,
        "cl100k_base",
    )
    assert row["PromptTokens"] == 129  # the cookbook's API-verified count for gpt-3.5-turbo
    completion = count_completion_text(["Things are fine."], "gpt-35-turbo")
    assert row["CompletionTokens"] == completion
    assert row["Cost"] == pytest.approx(129 * 0.5e-6 + completion * 1.5e-6, rel=1e-12)


def test_without_default_model_such_events_are_unknown_and_unpriced(
    engine: Engine, make_v1: MakeEvent, token_rows: TokenRows
) -> None:
    event = make_v1(Request={"messages": EXAMPLE_MESSAGES, "stream": True}, ResponseString="")
    result = Ingestor(engine).ingest_batch(raw(event))
    assert (result.stored, result.prompt_only, result.unpriced) == (1, 1, 1)
    (row,) = token_rows(engine)
    assert (row["ModelName"], row["ModelKnown"], row["EstimateEncoding"], row["Cost"]) == (
        "unknown",
        0,
        "o200k_base",
        None,
    )
    assert row["PromptTokens"] == 124  # the o200k_base fallback counts it as gpt-4o would


# ----------------------------------------------------------------------------- batching


def test_ingest_splits_into_batches_and_adds_up(engine: Engine, make_v2: MakeEvent) -> None:
    events = [make_v2() for _ in range(5)]
    seen: list[BatchResult] = []
    total = Ingestor(engine).ingest(raw(*events, events[0]), batch_size=2, on_batch=seen.append)
    assert [b.received for b in seen] == [2, 2, 2]
    assert (total.received, total.stored, total.duplicates) == (6, 5, 1)
    assert count(engine, token_table) == 5


# ----------------------------------------------------------------------------- unresolvable


def test_event_whose_usage_cannot_be_resolved_keeps_its_raw_body(
    engine: Engine, make_v2: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("bug in usage resolution")

    monkeypatch.setattr(ingest_module, "resolve_usage", broken)
    event = body(make_v2())
    result = Ingestor(engine).ingest_batch([RawEvent(event, "hub:0:42")])
    assert (result.stored, result.dead_lettered) == (0, 1)
    (row,) = dead_rows(engine)
    assert "bug in usage resolution" in row["Reason"]
    assert row["Source"] == "hub:0:42"
    assert row["RawBody"] == event


# ----------------------------------------------------------------------------- files


def test_jsonl_with_blank_lines_and_crlf(tmp_path: Path, make_v2: MakeEvent) -> None:
    bodies = [body(make_v2()) for _ in range(3)]
    path = tmp_path / "events.jsonl"
    data = bodies[0] + b"\r\n\r\n" + bodies[1] + b"\r\n   \r\n" + bodies[2]  # no final newline
    path.write_bytes(data)
    seen: list[int] = []

    events = list(iter_file_events(path, on_bytes=seen.append))

    assert [e.source for e in events] == ["events.jsonl:1", "events.jsonl:3", "events.jsonl:5"]
    assert [e.body for e in events] == bodies
    assert sum(seen) == len(data)


def test_json_array_file(tmp_path: Path, make_v2: MakeEvent) -> None:
    items = [make_v2(), make_v2()]
    path = tmp_path / "events.json"
    path.write_text("  \n" + json.dumps(items, indent=2), "utf-8")
    events = list(iter_file_events(path))
    assert [e.source for e in events] == ["events.json[1]", "events.json[2]"]
    assert [orjson.loads(e.body) for e in events] == items


def test_invalid_json_array_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"a": 1},', "utf-8")
    with pytest.raises(InputError, match="starts with '\\[' but is not a JSON array"):
        list(iter_file_events(path))


def test_single_pretty_printed_object_file(
    tmp_path: Path, make_v2: MakeEvent, engine: Engine
) -> None:
    event = make_v2()
    path = tmp_path / "one.json"
    path.write_text(json.dumps(event, indent=2) + "\n", "utf-8")
    events = list(iter_file_events(path))
    assert [e.source for e in events] == ["one.json"]
    assert orjson.loads(events[0].body) == event
    assert Ingestor(engine).ingest_batch(events).stored == 1


def test_gzipped_jsonl_file(tmp_path: Path, make_v2: MakeEvent) -> None:
    bodies = [body(make_v2()) for _ in range(3)]
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(bodies) + b"\n")
    events = list(iter_file_events(path))
    assert [e.source for e in events] == [f"events.jsonl.gz:{i}" for i in (1, 2, 3)]
    assert [e.body for e in events] == bodies


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match="no such file") as info:
        list(iter_file_events(missing))
    assert str(missing) in str(info.value)


def test_jsonl_whose_first_line_is_truncated_keeps_the_other_lines(
    tmp_path: Path, make_v2: MakeEvent
) -> None:
    bodies = [body(make_v2()) for _ in range(3)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(bodies[0][:100] + b"\n" + bodies[1] + b"\n" + bodies[2] + b"\n")
    events = list(iter_file_events(path))
    assert [e.source for e in events] == ["events.jsonl:1", "events.jsonl:2", "events.jsonl:3"]
    assert [e.body for e in events[1:]] == bodies[1:]


def test_jsonl_line_numbers_count_leading_blank_lines(tmp_path: Path, make_v2: MakeEvent) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n\n" + body(make_v2()) + b"\n")
    assert [e.source for e in iter_file_events(path)] == ["events.jsonl:3"]


# ----------------------------------------------------------------------------- concurrent ingesters


class _RacingRateBook(RateBook):
    """A rate book that lets a concurrent ingester commit ``event`` when it is first asked.

    ``Ingestor`` prices an event after checking which RequestIds are already stored and before
    inserting: this is exactly the window in which another ingester can win the race.
    """

    def __init__(self, engine: Engine, event: bytes) -> None:
        super().__init__([])
        self._engine, self._event, self.raced = engine, event, False

    def lookup(self, model_name: str, at: datetime) -> Rate | None:
        if not self.raced:
            self.raced = True
            assert Ingestor(self._engine).ingest_batch(raw(self._event)).stored == 1
        return super().lookup(model_name, at)


def test_lost_race_is_a_duplicate_and_not_counted_as_unpriced(
    engine: Engine, make_v2: MakeEvent
) -> None:
    event = body(
        make_v2(
            DeploymentName="my-deployment",
            Model=None,
            Usage=None,
            IsStreaming=True,
            Request={"messages": CHAT, "stream": True},
        )
    )
    book = _RacingRateBook(engine, event)

    result = Ingestor(engine, rates=book).ingest_batch(raw(event))

    assert book.raced
    assert count(engine, token_table) == 1
    assert (result.stored, result.duplicates) == (0, 1)
    assert (result.prompt_only, result.unpriced, result.unknown_models) == (0, 0, set())
    assert result.summary() == "1 received: 0 stored, 1 duplicates, 0 dead-lettered"


# ----------------------------------------------------------------------------- worker processes


def _stream(events: list[dict[str, Any] | bytes]) -> list[RawEvent]:
    return [
        RawEvent(e if isinstance(e, bytes) else json.dumps(e).encode(), f"mem:{i}")
        for i, e in enumerate(events, start=1)
    ]


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    drop = {"Id", "IngestedAtUTC"}
    return sorted(
        ({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: r["RequestId"]
    )


def test_worker_processes_store_exactly_what_in_process_ingest_stores(
    tmp_path: Path, make_v2: MakeEvent, make_v1: MakeEvent, token_rows: TokenRows
) -> None:
    events: list[dict[str, Any] | bytes] = [make_v2() for _ in range(40)]
    events += [make_v1(ExecTimeUTC=f"2026-11-05 10:00:{s:02d}") for s in range(10)]
    events += [make_v2(Usage=None, IsStreaming=True, Request={"messages": CHAT})]
    events += [b'{"EventVersion": 2, "RequestId": "cut', events[3]]  # a bad one and a redelivery
    results = {}
    rows = {}
    for workers in (0, 1):
        engine = engine_from_url(str(tmp_path / f"w{workers}.db"))
        from aoai_helpers.pipeline.service import ensure_db

        ensure_db(engine)
        results[workers] = Ingestor(engine).ingest(_stream(events), batch_size=7, workers=workers)
        rows[workers] = _comparable(token_rows(engine))
        engine.dispose()
    assert results[0] == results[1]
    assert (
        results[1].received,
        results[1].stored,
        results[1].duplicates,
        results[1].dead_lettered,
    ) == (
        len(events),
        51,
        1,
        1,
    )
    assert rows[0] == rows[1]


def test_worker_batches_prepared_ahead_count_cross_batch_redeliveries_as_duplicates(
    engine: Engine, make_v2: MakeEvent, token_rows: TokenRows
) -> None:
    first = [make_v2() for _ in range(5)]
    events = first + first  # batch 2 was prepared before batch 1 was committed
    result = Ingestor(engine).ingest(_stream(events), batch_size=5, workers=1)
    assert (result.stored, result.duplicates) == (5, 5)
    assert result.prompt_only == 0 and result.unpriced == 0
    assert len(token_rows(engine)) == 5


def test_in_memory_sqlite_never_uses_worker_processes(make_v2: MakeEvent) -> None:
    from aoai_helpers.pipeline.service import ensure_db

    engine = create_engine("sqlite://")
    try:
        ensure_db(engine)
        result = Ingestor(engine).ingest(_stream([make_v2(), make_v2()]), workers=2)
    finally:
        engine.dispose()
    assert result.stored == 2


@pytest.mark.parametrize(
    ("size", "cpus", "expected"),
    [
        (0, 8, 0),
        (16 * 2**20 - 1, 8, 0),
        (16 * 2**20, 1, 0),
        (16 * 2**20, 2, 1),
        (2**30, 4, 3),
        (2**30, 64, 3),
    ],
)
def test_auto_workers(size: int, cpus: int, expected: int) -> None:
    from aoai_helpers.pipeline.service import auto_workers

    assert auto_workers(size, cpus) == expected
