"""The daily rollup ``AoaiUsageDaily`` equals the aggregate of the call rows, whatever happened.

The property test draws any sequence of ingests (new calls, duplicates inside a batch,
redeliveries with other content), rate edits (repricing) and reconciliations (APIM's log,
records for calls that exist and for calls that do not), and after every step compares the
rollup with the rows summed *in Python* from the table — not with the SQL that builds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ingest_events_into, new_v2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text
from sqlalchemy.engine import Engine

from aoai_helpers.config import spec_path
from aoai_helpers.core.pricing import Rate, default_rates
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.rates import store_rates
from aoai_helpers.db.rollup import KEY_COLUMNS, SUM_COLUMNS, rebuild_statements
from aoai_helpers.db.schema import init_db
from aoai_helpers.db.tables import daily_table, rate_table, reconcile_state, token_table
from aoai_helpers.eventlog.llmlog import LlmLogRecord
from aoai_helpers.pipeline.reconcile import reconcile
from aoai_helpers.pipeline.reprice import set_rates
from aoai_helpers.spec import Reconcile, load_spec
from aoai_helpers.synthetic.rows import generate

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

T0 = datetime(2026, 10, 30, 6, 0)
IDS = [f"0000000{i:x}-1111-4222-8333-444455556666" for i in range(16)]
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4o-2024-11-20", "my-finetune", None]
CHAT = {"messages": [{"role": "user", "content": "Hello there, how are you today?"}]}


def _ints(row: dict[str, Any]) -> list[int]:
    return [int(row[c] or 0) for c in ("PromptTokens", "CompletionTokens", "CachedTokens")]


def expected(engine: Engine) -> dict[tuple[Any, ...], list[Any]]:
    """The call rows summed in Python per rollup group ('' for NULL), day as a datetime."""
    with transaction(engine) as conn:
        rows = conn.execute(select(token_table)).mappings().all()
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        day = r["ExecDateUTC"]
        day = datetime.fromisoformat(day) if isinstance(day, str) else day
        key = (day, *(r[k] or "" for k in KEY_COLUMNS[1:]))
        s = out.setdefault(key, [0, 0, 0, 0, 0, 0, 0, None])
        s[0] += 1
        s[1] += r["Cost"] is not None
        for j, c in enumerate(SUM_COLUMNS[2:-1], start=2):
            s[j] += int(r[c] or 0)
        if r["Cost"] is not None:
            s[-1] = (s[-1] or 0.0) + float(r["Cost"])
    return out


def rollup(engine: Engine) -> dict[tuple[Any, ...], list[Any]]:
    with transaction(engine) as conn:
        rows = conn.execute(select(daily_table)).mappings().all()
    out = {}
    for r in rows:
        day = r["ExecDateUTC"]
        day = datetime.fromisoformat(day) if isinstance(day, str) else day
        out[(day, *(r[k] for k in KEY_COLUMNS[1:]))] = [r[c] for c in SUM_COLUMNS]
    return out


def assert_rollup_matches(engine: Engine) -> None:
    want, have = expected(engine), rollup(engine)
    assert set(have) == set(want), (sorted(set(have) ^ set(want), key=str)[:5], len(want))
    for key, sums in want.items():
        got = have[key]
        assert [int(v) for v in got[:-1]] == sums[:-1], key
        if sums[-1] is None:
            assert got[-1] is None, key
        else:
            assert got[-1] == pytest.approx(sums[-1], rel=1e-9, abs=1e-12), key


# ----------------------------------------------------------------------------- the steps

calls = st.fixed_dictionaries(
    {
        "id": st.sampled_from(IDS),
        "hour": st.integers(0, 71),
        "sub": st.sampled_from(["sub-a", "sub-b", None]),
        "name": st.sampled_from(["Team A", "", None]),
        "deployment": st.sampled_from(["gpt-4o", "mini", None]),
        "model": st.sampled_from(MODELS),
        "kind": st.sampled_from(["reported", "stream", "throttled"]),
        "prompt": st.integers(0, 5000),
        "completion": st.integers(0, 3000),
        "cached": st.integers(0, 500),
    }
)


def _event(c: dict[str, Any]) -> dict[str, Any]:
    when = T0 + timedelta(hours=c["hour"], minutes=7)
    fields: dict[str, Any] = {
        "RequestId": c["id"],
        "ExecTimeUTC": when.isoformat(timespec="milliseconds") + "Z",
        "SubscriptionId": c["sub"],
        "SubscriptionName": c["name"],
        "DeploymentName": c["deployment"],
        "Model": c["model"],
    }
    if c["kind"] == "stream":  # no usage seen: prompt_only, reconcilable
        fields.update(IsStreaming=True, Usage=None, Model=None, Request=CHAT)
    elif c["kind"] == "throttled":
        fields.update(StatusCode=429, Usage=None)
    else:
        cached = min(c["cached"], c["prompt"])
        fields["Usage"] = {
            "prompt_tokens": c["prompt"],
            "completion_tokens": c["completion"],
            "total_tokens": c["prompt"] + c["completion"],
            "cached_tokens": cached,
            "reasoning_tokens": 0,
        }
    return new_v2(**fields)


class _Log:
    name = "test:rollup"

    def __init__(self, records: list[LlmLogRecord]) -> None:
        self.records = records

    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        return [r for r in self.records if start <= r.time_generated < end]


steps = st.one_of(
    st.tuples(st.just("ingest"), st.lists(calls, min_size=1, max_size=8)),
    st.tuples(
        st.just("rate"),
        st.fixed_dictionaries(
            {
                "model": st.sampled_from(["gpt-4o", "gpt-4o-mini", "my-finetune"]),
                "prompt": st.floats(1e-7, 1e-4),
                "from_hour": st.integers(-24, 80),
            }
        ),
    ),
    st.tuples(
        st.just("reconcile"),
        st.lists(
            st.tuples(st.sampled_from(IDS), st.integers(1, 900), st.integers(0, 900)),
            max_size=5,
        ),
    ),
)


def _apply(engine: Engine, step: tuple[str, Any]) -> None:
    kind, arg = step
    if kind == "ingest":
        ingest_events_into(engine, *(_event(c) for c in arg))
    elif kind == "rate":
        start = T0 + timedelta(hours=arg["from_hour"])
        rate = Rate(arg["model"], arg["prompt"], 2 * arg["prompt"], effective_from=start)
        with transaction(engine) as conn:
            set_rates(conn, [rate])
    else:
        with transaction(engine) as conn:
            when = {
                r.RequestId: r.ExecTimeUTC
                for r in conn.execute(select(token_table.c.RequestId, token_table.c.ExecTimeUTC))
            }
        records = [
            LlmLogRecord(rid, _time(when[rid]), 0, p, c, p + c, "gpt-4o-2024-11-20", "gpt-4o", True)
            for rid, p, c in arg
            if rid in when
        ]
        reconcile(
            engine,
            _Log(records),
            Reconcile(),
            since=T0 - timedelta(days=1),
            until=T0 + timedelta(days=5),
        )


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _reset(engine: Engine) -> None:
    with transaction(engine) as conn:
        for table in (token_table, daily_table, reconcile_state, rate_table):
            conn.execute(delete(table))
        store_rates(conn, default_rates())


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(steps, min_size=1, max_size=6))
def test_the_rollup_is_the_sum_of_the_rows_after_any_mix_of_writes(
    engine: Engine, plan: list[tuple[str, Any]]
) -> None:
    _reset(engine)
    for step in plan:
        _apply(engine, step)
        assert_rollup_matches(engine)


def test_a_redelivered_batch_adds_nothing(engine: Engine) -> None:
    events = [_event({"id": i, "hour": n, "sub": "sub-a", "name": "A", "deployment": "gpt-4o", "model": "gpt-4o", "kind": "reported", "prompt": 10 * n, "completion": n, "cached": 0}) for n, i in enumerate(IDS[:6])]  # fmt: skip
    ingest_events_into(engine, *events)
    first = rollup(engine)
    assert sum(v[0] for v in first.values()) == 6
    ingest_events_into(engine, *events)
    assert rollup(engine) == first
    assert_rollup_matches(engine)


# ----------------------------------------------------------------------------- db upgrade


@pytest.fixture
def v3_database(tmp_path: Path) -> Iterator[Engine]:
    """A database as schema v3 left it: calls stored, no rollup table."""
    engine = engine_from_url(str(tmp_path / "v3.db"))
    init_db(engine)
    ingest_events_into(engine, *(_event({"id": i, "hour": 5 * n, "sub": None, "name": None, "deployment": "mini", "model": "gpt-4o-mini", "kind": "reported", "prompt": 100, "completion": n, "cached": 3}) for n, i in enumerate(IDS)))  # fmt: skip
    with transaction(engine) as conn:
        conn.execute(text("DROP TABLE AoaiUsageDaily"))
        conn.execute(text("UPDATE AoaiSchemaVersion SET Version = 3"))
    yield engine
    engine.dispose()


def test_db_init_builds_the_rollup_of_a_database_that_predates_it(v3_database: Engine) -> None:
    changes = init_db(v3_database)
    assert "built AoaiUsageDaily from the stored calls" in changes
    assert changes[-2:] == ["schema version 4", "schema version 5"]
    assert sum(v[0] for v in rollup(v3_database).values()) == len(IDS)
    assert_rollup_matches(v3_database)
    assert init_db(v3_database) == []  # once


def test_local_generate_keeps_the_rollup_through_top_ups(engine: Engine) -> None:
    """``local generate`` writes through the same writer: a run, the same run again (every row
    skipped) and a top-up (some rows of each batch stored, some skipped) keep it exact."""
    spec = load_spec(spec_path())
    generate(engine, spec, rows=1500, month="2026-10", batch_size=400, workers=0)
    assert_rollup_matches(engine)
    generate(engine, spec, rows=1500, month="2026-10", batch_size=400, workers=0)
    generate(engine, spec, rows=2500, month="2026-10", batch_size=400, workers=0)
    calls = sum(v[0] for v in rollup(engine).values())
    assert 2400 <= calls <= 2600, calls  # each hour topped up to its new share
    assert_rollup_matches(engine)


def test_the_rebuild_groups_by_literals_on_sql_server() -> None:
    """SQL Server (pyodbc, qmark) takes a ``?`` in the SELECT and the same ``?`` in the GROUP BY
    as different expressions (Msg 8120): the rebuild's empty-text keys must be literals."""
    from sqlalchemy.dialects import mssql

    _delete, insert = rebuild_statements(T0, T0 + timedelta(days=2), "gpt-4o")
    sql = str(insert.compile(dialect=mssql.dialect(paramstyle="qmark")))
    select_part, group_by = sql.split("GROUP BY")
    assert "?" not in group_by, group_by
    assert "coalesce([ApimAoaiToken].[SubscriptionId], '')" in select_part
    assert select_part.count("?") == 3  # the window's two days and the model, in the WHERE
