"""Tests for aoai_helpers.db.views (the views for Power BI) and the exact money columns.

The views must give the figures ``report`` gives: the per-BU rows of
:func:`aoai_helpers.analysis.report.chargeback_by_bu` are rebuilt here from the views' rows,
on SQLite and on a real PostgreSQL server, over a database holding every case of the BU rule
(mapped, by subscription name, by subscription id, no subscription), unpriced and estimated
calls and two months. Unpriced is NULL in the views, never 0. The T-SQL of the views is parsed
with sqlglot and may name only columns that exist. Migration 0005 is checked on a PostgreSQL
database as schema v4 left it (FLOAT money columns, a DBA's own view).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlalchemy import Float, Numeric, inspect, select
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Engine
from sqlglot import exp
from usage_events import usage

from aoai_helpers.analysis import report
from aoai_helpers.analysis.report import chargeback_by_bu
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.migrations.v0005_money_views import money_tsql_blocks
from aoai_helpers.db.schema import init_db
from aoai_helpers.db.tables import (
    MONEY_COLUMNS,
    SCHEMA_TABLES,
    bu_map,
    daily_table,
    metadata,
    token_table,
)
from aoai_helpers.db.views import (
    ESTIMATED_SOURCES,
    NO_SUBSCRIPTION,
    VIEWS,
    create_view_statements,
    view_select,
)

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

ROOT = Path(__file__).resolve().parent.parent
REL = 1e-12
DAILY, MONTHLY, CALLS = VIEWS
MONTHS = ("2026-10", "2026-11")


def sub(sid: str | None, name: str | None) -> dict[str, str | None]:
    return {"SubscriptionId": sid, "SubscriptionName": name}


@pytest.fixture
def billed(engine: Engine, make_v2: Any, ingest_events: Any) -> Engine:
    """Default rates; calls of every kind over two months and five subscriptions."""
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1"),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1"),
            ],
        )
    at = "2026-11-{:02d}T{:02d}:00:00.000Z".format
    events = [
        make_v2(**sub("sub-a", "fin-a"), ExecTimeUTC=at(1, 0), Usage=usage(1000, 200)),
        make_v2(**sub("sub-a", "fin-a"), ExecTimeUTC=at(10, 12), Usage=usage(2000, 100, 1024)),
        make_v2(
            **sub("sub-b", "fin-b"),
            ExecTimeUTC=at(15, 9),
            DeploymentName="gpt-4.1-mini",
            Model="gpt-4.1-mini-2025-04-14",
            Usage=usage(500, 500),
        ),
        make_v2(  # no rate: unpriced, in a BU that has priced calls
            **sub("sub-b", "fin-b"), ExecTimeUTC=at(16, 9), Model="my-finetune", Usage=usage(10, 10)
        ),
        make_v2(  # usage not reported: the prompt counted (prompt_only, estimated)
            **sub("sub-b", "fin-b"),
            ExecTimeUTC=at(17, 9),
            IsStreaming=True,
            Usage=None,
            Request={"messages": [{"role": "user", "content": "Hello"}]},
        ),
        make_v2(**sub("sub-c", "legal-review"), ExecTimeUTC=at(30, 23), Usage=usage(100, 50)),
        make_v2(  # by subscription id (no name); only unpriced calls: its cost is unpriced
            **sub("sub-d", None), ExecTimeUTC=at(3, 8), Model="my-finetune", Usage=usage(7, 3)
        ),
        make_v2(**sub(None, None), ExecTimeUTC=at(4, 8), Usage=usage(40, 2)),  # no subscription
        make_v2(
            **sub("sub-a", "fin-a"), ExecTimeUTC="2026-10-31T23:59:59.999Z", Usage=usage(100, 50)
        ),
        make_v2(
            **sub("sub-c", "legal-review"),
            ExecTimeUTC="2026-10-15T08:00:00.000Z",
            Usage=usage(1000, 200),
        ),
    ]
    result = ingest_events(engine, *events)
    assert (result.stored, result.unpriced, result.dead_lettered) == (10, 2, 0)
    return engine


def rows(engine: Engine, view: str) -> list[dict[str, Any]]:
    with transaction(engine) as conn:
        return [dict(r) for r in conn.exec_driver_sql(f'SELECT * FROM "{view}"').mappings()]


def month_of(day: Any) -> str:
    return str(day)[:7]  # SQLite: 'YYYY-MM-DD' text; PostgreSQL: a date


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def charges_from(view_rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``chargeback_by_bu``'s figures per BU rebuilt from rows of a chargeback view (the
    report's rules: cost of the priced calls, MIXED currencies, the largest cost centre)."""
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "p": 0, "c": 0, "t": 0, "cost": 0.0, "un": 0, "ec": 0.0, "en": 0}
    )
    currencies: dict[str, set[str]] = defaultdict(set)
    centres: dict[str, set[str]] = defaultdict(set)
    for r in view_rows:
        s = per[r["BusinessUnit"]]
        estimated = "IsEstimated" in r and r["IsEstimated"] == 1
        s["n"] += int(r["Calls"])
        s["p"] += int(r["PromptTokens"])
        s["c"] += int(r["CompletionTokens"])
        s["t"] += int(r["TotalTokens"])
        s["cost"] += as_float(r["Cost"]) or 0.0
        s["un"] += int(r["UnpricedCalls"])
        s["ec"] += (
            (as_float(r["Cost"]) or 0.0) if estimated else as_float(r.get("EstimatedCost")) or 0.0
        )
        s["en"] += int(r["Calls"]) if estimated else int(r.get("EstimatedCalls") or 0)
        if r["Currency"] is not None:
            currencies[r["BusinessUnit"]].add(r["Currency"])
        if r["CostCentre"] is not None:
            centres[r["BusinessUnit"]].add(r["CostCentre"])
    out = []
    for bu, s in per.items():
        cur = currencies[bu]
        currency = next(iter(cur)) if len(cur) == 1 else (None if not cur else report.MIXED)
        centre = max(centres[bu]) if centres[bu] else None
        counts = (s["n"], s["p"], s["c"], s["t"], currency, s["un"], s["en"])
        cost, estimated_cost = pytest.approx(s["cost"], rel=REL), pytest.approx(s["ec"], rel=REL)
        out.append((bu, centre, *counts, cost, estimated_cost))
    return sorted(out, key=lambda t: t[0])


def report_charges(engine: Engine, month: str) -> list[tuple[Any, ...]]:
    return sorted(
        (
            (
                c.business_unit,
                c.cost_centre,
                c.calls,
                c.prompt_tokens,
                c.completion_tokens,
                c.total_tokens,
                c.currency,
                c.unpriced_calls,
                c.estimated_calls,
                c.cost,
                c.estimated_cost,
            )
            for c in chargeback_by_bu(engine, month)
        ),
        key=lambda t: t[0],
    )


# ----------------------------------------------------------------------------- the figures


def test_the_rules_are_the_reports() -> None:
    assert NO_SUBSCRIPTION == report.NO_SUBSCRIPTION
    assert ESTIMATED_SOURCES == report.ESTIMATED_SOURCES


def test_every_view_has_its_columns_in_order(billed: Engine) -> None:
    with transaction(billed) as conn:
        for view in VIEWS:
            got = conn.exec_driver_sql(f'SELECT * FROM "{view.name}" WHERE 1 = 0').keys()
            assert list(got) == list(view.columns), view.name


@pytest.mark.parametrize("month", MONTHS)
def test_daily_view_gives_the_reports_per_bu_figures(billed: Engine, month: str) -> None:
    daily = [r for r in rows(billed, DAILY.name) if month_of(r["UsageDate"]) == month]
    expected = report_charges(billed, month)
    assert charges_from(daily) == expected
    if month == "2026-11":  # every branch of the BU rule is there
        assert {e[0] for e in expected} == {"Finance", "legal-review", "sub-d", NO_SUBSCRIPTION}


@pytest.mark.parametrize("month", MONTHS)
def test_monthly_view_gives_the_reports_per_bu_figures(billed: Engine, month: str) -> None:
    monthly = [r for r in rows(billed, MONTHLY.name) if r["UsageMonth"] == month]
    assert {month_of(r["MonthStart"]) + "-01" == str(r["MonthStart"]) for r in monthly} == {True}
    assert charges_from(monthly) == report_charges(billed, month)


def test_priced_calls_view_has_every_call_with_its_business_unit(billed: Engine) -> None:
    calls = rows(billed, CALLS.name)
    with transaction(billed) as conn:
        stored = {r.RequestId: r for r in conn.execute(select(token_table))}
        mapped = {r.SubscriptionId: r for r in conn.execute(select(bu_map))}
    assert sorted(r["RequestId"] for r in calls) == sorted(stored)
    for r in calls:
        t = stored[r["RequestId"]]
        unit = mapped.get(t.SubscriptionId)
        bu = (
            unit.BusinessUnit if unit else t.SubscriptionName or t.SubscriptionId or NO_SUBSCRIPTION
        )
        assert (r["BusinessUnit"], r["CostCentre"]) == (bu, unit.CostCentre if unit else None)
        assert (r["ModelName"], r["DeploymentName"], r["TotalTokens"]) == (
            t.ModelName,
            t.DeploymentName,
            t.TotalTokens,
        )
        assert r["PriceStatus"] == ("unpriced" if t.Cost is None else "priced")
        assert as_float(r["Cost"]) == (None if t.Cost is None else pytest.approx(t.Cost, rel=REL))
        assert r["IsEstimated"] == (1 if t.UsageSource in ESTIMATED_SOURCES else 0)
        assert month_of(r["UsageDate"]) == f"{t.ExecDateUTC:%Y-%m}"


def test_unpriced_is_null_in_every_view_never_zero(billed: Engine) -> None:
    daily = rows(billed, DAILY.name)
    unpriced = [r for r in daily if r["PricedCalls"] == 0]
    assert {r["ModelName"] for r in unpriced} == {"my-finetune"}
    for r in unpriced:
        assert (r["Cost"], r["Currency"], r["UnpricedCalls"]) == (None, None, r["Calls"])
    assert all(r["Cost"] is not None and r["Currency"] == "USD" for r in daily if r["PricedCalls"])
    calls = [r for r in rows(billed, CALLS.name) if r["PriceStatus"] == "unpriced"]
    assert len(calls) == 2 and {(r["Cost"], r["Currency"]) for r in calls} == {(None, None)}
    # a BU whose calls are all unpriced: the report's statement line keeps 0.0 and the count,
    # the monthly view says NULL
    (only,) = [r for r in rows(billed, MONTHLY.name) if r["BusinessUnit"] == "sub-d"]
    assert (only["Cost"], only["EstimatedCost"], only["UnpricedCalls"]) == (None, None, 1)


# ----------------------------------------------------------------------------- T-SQL


def _tsql(view: Any) -> exp.Expression:
    (statement,) = create_view_statements(view, mssql.dialect(deprecate_large_types=True))  # type: ignore[no-untyped-call]
    parsed = sqlglot.parse_one(statement, read="tsql")
    assert not [n for n in parsed.walk() if isinstance(n, exp.Command)], statement
    return parsed


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_tsql_of_the_views_parses_and_names_only_existing_columns(view: Any) -> None:
    parsed = _tsql(view)
    assert isinstance(parsed, exp.Create) and parsed.kind == "VIEW" and parsed.args["replace"]
    assert parsed.this.name == view.name
    select_ = parsed.expression
    assert [e.alias_or_name for e in select_.expressions] == list(view.columns)
    inner = {e.alias_or_name for s in select_.find_all(exp.Subquery) for e in s.this.expressions}
    named = [c for c in select_.find_all(exp.Column)]
    assert named
    for col in named:
        if col.table in metadata.tables:
            assert col.name in metadata.tables[col.table].c, f"{col.table}.{col.name}"
        else:  # the monthly view's subquery
            assert (col.table, col.name in inner) == ("d", True), col.sql("tsql")
    tables = {t.name for t in select_.find_all(exp.Table)}
    assert tables <= {t.name for t in SCHEMA_TABLES}
    assert tables >= {bu_map.name} and tables & {daily_table.name, token_table.name}


def test_the_sql_scripts_carry_the_views_as_generated() -> None:
    d = mssql.dialect(deprecate_large_types=True)  # type: ignore[no-untyped-call]
    schema = (ROOT / "sql" / "aoaieventdb.sql").read_text("utf-8")
    upgrade = (ROOT / "sql" / "migrate_from_original.sql").read_text("utf-8")
    for view in VIEWS:
        (statement,) = create_view_statements(view, d)
        body = "\n".join(line.rstrip() for line in statement.splitlines())
        assert body + "\nGO\n" in schema and body + "\nGO\n" in upgrade, view.name
        assert view_select(view, d) in statement


def test_money_tsql_drops_and_recreates_the_index_that_holds_the_cost() -> None:
    d = mssql.dialect(deprecate_large_types=True)  # type: ignore[no-untyped-call]
    (block,) = money_tsql_blocks(d, [token_table.c.Cost])
    parsed = sqlglot.parse(block, read="tsql")
    assert parsed and not [n for s in parsed if s for n in s.walk() if isinstance(n, exp.Command)]
    drop = block.index("    DROP INDEX [ix_ApimAoaiToken_Report] ON [ApimAoaiToken];")
    alter = block.index("    ALTER TABLE [ApimAoaiToken] ALTER COLUMN [Cost] NUMERIC(28, 12) NULL;")
    assert drop < alter  # the index first: ALTER COLUMN refuses a column an index holds
    guards = [line for line in block.splitlines() if not line.startswith("    ")]
    assert len(guards) == 2 and all(
        g.startswith("IF EXISTS (SELECT 1 FROM sys.columns") for g in guards
    )
    (rate,) = money_tsql_blocks(d, [metadata.tables["AoaiTokenRate"].c.PromptTokenRate])
    assert "DROP INDEX" not in rate and "NUMERIC(27, 18) NOT NULL;" in rate


# ----------------------------------------------------------------------------- money types


def test_money_columns_are_exact_where_the_database_has_decimals(billed: Engine) -> None:
    """NUMERIC(p, s) on PostgreSQL (REAL on SQLite), and Python reads floats either way."""
    insp = inspect(billed)
    for table, name in MONEY_COLUMNS:
        if table not in insp.get_table_names():
            continue
        (kind,) = [c["type"] for c in insp.get_columns(table) if c["name"] == name]
        exact = isinstance(kind, Numeric) and not isinstance(kind, Float)
        assert exact is (billed.dialect.name != "sqlite"), (table, name, kind)
    with transaction(billed) as conn:
        costs = conn.execute(select(token_table.c.Cost).where(token_table.c.Cost.is_not(None)))
        rates = conn.execute(select(metadata.tables["AoaiTokenRate"].c.PromptTokenRate))
        for value in [*costs.scalars(), *rates.scalars()]:
            assert type(value) is float


# ----------------------------------------------------------------------------- migration 0005


@pytest.fixture
def pg_v4(pg_server: Any) -> Iterator[Engine]:
    """A PostgreSQL database as schema v4 left it: FLOAT money columns, no views, calls
    priced; a DBA's own view reads ``BusinessUnitMap.MonthlyBudget``."""
    from conftest import ingest_events_into, new_v2

    engine = engine_from_url(pg_server.new_database())
    init_db(engine)
    ingest_events_into(engine, new_v2(), new_v2(Model="my-finetune"))
    with transaction(engine) as conn:
        set_bu(conn, [BusinessUnit("sub-x", "Ops", monthly_budget=1234.5)])
        for view in reversed(VIEWS):
            conn.exec_driver_sql(f'DROP VIEW "{view.name}"')
        for table, name in MONEY_COLUMNS:
            if table in inspect(conn).get_table_names():
                conn.exec_driver_sql(
                    f'ALTER TABLE "{table}" ALTER COLUMN "{name}" TYPE DOUBLE PRECISION'
                )
        conn.exec_driver_sql(
            'CREATE VIEW my_budgets AS SELECT "BusinessUnit", "MonthlyBudget" FROM "BusinessUnitMap"'
        )
        conn.exec_driver_sql('UPDATE "AoaiSchemaVersion" SET "Version" = 4')
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_migration_5_makes_money_exact_on_postgresql(pg_v4: Engine) -> None:
    with transaction(pg_v4) as conn:
        before = sorted(
            conn.exec_driver_sql('SELECT "Cost" FROM "ApimAoaiToken"').scalars(), key=str
        )
    changes = init_db(pg_v4)
    assert changes == [
        "kept BusinessUnitMap (MonthlyBudget) inexact: view(s) my_budgets read it or the views"
        " — drop them, run db upgrade, create them again",
        "made AoaiTokenRate (PromptTokenRate, CompletionTokenRate, CachedPromptTokenRate)"
        " exact: NUMERIC",
        "made AoaiUsageDaily (Cost) exact: NUMERIC",
        "made ApimAoaiToken (Cost, PriorCost) exact: NUMERIC",
        *(f"created view {v.name}" for v in VIEWS),
        "schema version 5",
    ]
    cols = {c["name"]: c["type"] for c in inspect(pg_v4).get_columns("ApimAoaiToken")}
    assert (cols["Cost"].precision, cols["Cost"].scale) == (28, 12)
    with transaction(pg_v4) as conn:
        after = sorted(
            conn.exec_driver_sql('SELECT "Cost" FROM "ApimAoaiToken"').scalars(), key=str
        )
        assert conn.exec_driver_sql("SELECT * FROM my_budgets").all() == [("Ops", 1234.5)]
    assert [None if v is None else Decimal(repr(v)) for v in before] == after  # same values
    assert len(rows(pg_v4, CALLS.name)) == 2
    # while it stays, every start (ensure_db) leaves our views — and their grants — alone
    oid = "SELECT to_regclass('\"vw_AoaiChargebackMonthly\"')::oid"
    with transaction(pg_v4) as conn:
        view_oid = conn.exec_driver_sql(oid).scalar()
    kept = (
        "kept BusinessUnitMap (MonthlyBudget) inexact: view(s) my_budgets read it or the views"
        " — drop them, run db upgrade, create them again"
    )
    assert init_db(pg_v4) == [kept]
    # a DBA's view on one of ours: ours cannot be dropped around the change, so it waits too
    with transaction(pg_v4) as conn:
        conn.exec_driver_sql("DROP VIEW my_budgets")
        conn.exec_driver_sql('CREATE VIEW my_monthly AS SELECT * FROM "vw_AoaiChargebackMonthly"')
    assert init_db(pg_v4) == [kept.replace("my_budgets", "my_monthly")]
    with transaction(pg_v4) as conn:
        assert conn.exec_driver_sql(oid).scalar() == view_oid
    # once the DBA's views are gone, db init finishes the job (guarded: only what is left)
    with transaction(pg_v4) as conn:
        conn.exec_driver_sql("DROP VIEW my_monthly")
    assert init_db(pg_v4) == [  # the views are dropped around any such change: made again
        "made BusinessUnitMap (MonthlyBudget) exact: NUMERIC",
        *(f"created view {v.name}" for v in VIEWS),
    ]
    assert init_db(pg_v4) == []


@pytest.mark.postgres
def test_a_later_definition_replaces_an_older_one_on_postgresql(pg_server: Any) -> None:
    """Pending, migration 0005 replaces the views — also one whose columns differ, which
    ``CREATE OR REPLACE VIEW`` alone refuses."""
    engine = engine_from_url(pg_server.new_database())
    try:
        init_db(engine)
        with transaction(engine) as conn:
            conn.exec_driver_sql(f'DROP VIEW "{DAILY.name}"')
            conn.exec_driver_sql(f'CREATE VIEW "{DAILY.name}" AS SELECT 1 AS "Old"')
            conn.exec_driver_sql('UPDATE "AoaiSchemaVersion" SET "Version" = 4')
        changes = init_db(engine)
        assert changes == [*(f"replaced view {v.name}" for v in VIEWS), "schema version 5"]
        with transaction(engine) as conn:
            for view in VIEWS:
                got = conn.exec_driver_sql(f'SELECT * FROM "{view.name}" WHERE 1 = 0').keys()
                assert list(got) == list(view.columns), view.name
    finally:
        engine.dispose()
