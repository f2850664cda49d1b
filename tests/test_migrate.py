"""Tests for aoai_helpers.pipeline.upgrade (``db upgrade`` from the original schema, the T-SQL migration
script) and the Azure SQL paths: generated T-SQL parsed by sqlglot, the ingest ``MERGE``, and
``mssql+pyodbc`` URLs without pyodbc.

The original database is made from ``tests/data/original_aoaieventdb.sql`` (the original
project's T-SQL) translated for SQLite and PostgreSQL below; a test checks the translations
against the T-SQL. The round trips are helpers taking a URL (``_check_upgrade(url)``): they
run on a SQLite file, and on PostgreSQL when ``TEST_POSTGRES_URL`` names a server
(``postgresql+psycopg://user@host:port/postgres``) or the suite's throwaway cluster is there
(conftest's ``pg_server``); each test gets a database of its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import types
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from cli_run import run_cli
from sqlalchemy import (
    Float,
    Numeric,
    column,
    create_engine,
    create_mock_engine,
    func,
    inspect,
    select,
    table,
)
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import Engine, make_url
from sqlglot import exp

from aoai_helpers.cli import main as cli
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import EPOCH
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.migrate_tsql import migration_tsql
from aoai_helpers.db.schema import SCHEMA_VERSION, ddl, init_db
from aoai_helpers.db.tables import (
    MONEY_COLUMNS,
    SCHEMA_TABLES,
    daily_table,
    dead_letter,
    metadata,
    rate_table,
    token_table,
)
from aoai_helpers.db.views import VIEWS
from aoai_helpers.exceptions import ConfigError, DatabaseError
from aoai_helpers.pipeline import upgrade as migrate_module
from aoai_helpers.pipeline.ingest import (
    ROW_COLUMNS,
    Ingestor,
    RawEvent,
    row_insert,
    skip_existing_insert,
)
from aoai_helpers.pipeline.upgrade import (
    LEGACY_PREFIX,
    ORIGINAL_RATE_SOURCE,
    ORIGINAL_TOKEN_COLUMNS,
    legacy_request_id,
    upgrade,
)

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_TSQL = Path(__file__).parent / "data" / "original_aoaieventdb.sql"

#: The original T-SQL translated for SQLite (types as SQLite keeps them; names unquoted).
ORIGINAL_SQLITE_DDL = """
CREATE TABLE AoaiTokenRate (
    ModelName nvarchar(100) NOT NULL,
    PromptTokenRate float NOT NULL,
    CompletionTokenRate float NOT NULL
);
CREATE TABLE ApimAoaiToken (
    ExecTimeUTC datetime NOT NULL,
    ExecDateUTC datetime NOT NULL,
    GatewayRegion nvarchar(100) NULL,
    GatewayServiceName nvarchar(150) NULL,
    SubscriptionId nvarchar(50) NULL,
    SubscriptionName nvarchar(100) NULL,
    UserName nvarchar(50) NULL,
    UserEmail nvarchar(50) NULL,
    ProductName nvarchar(100) NULL,
    ApiName nvarchar(100) NULL,
    OperationId nvarchar(100) NULL,
    ModelName nvarchar(100) NULL,
    IsStreaming tinyint NOT NULL,
    PromptTokens int NOT NULL,
    CompletionTokens int NOT NULL,
    TotalTokens int NOT NULL
);
CREATE INDEX indx_ExecDate ON ApimAoaiToken (ExecDateUTC);
CREATE INDEX indx_ExecTime ON ApimAoaiToken (ExecTimeUTC)
"""

#: The same for PostgreSQL (quoted: the names keep their case, as SQLAlchemy expects them).
ORIGINAL_POSTGRES_DDL = """
CREATE TABLE "AoaiTokenRate" (
    "ModelName" varchar(100) NOT NULL,
    "PromptTokenRate" double precision NOT NULL,
    "CompletionTokenRate" double precision NOT NULL
);
CREATE TABLE "ApimAoaiToken" (
    "ExecTimeUTC" timestamp NOT NULL,
    "ExecDateUTC" timestamp NOT NULL,
    "GatewayRegion" varchar(100) NULL,
    "GatewayServiceName" varchar(150) NULL,
    "SubscriptionId" varchar(50) NULL,
    "SubscriptionName" varchar(100) NULL,
    "UserName" varchar(50) NULL,
    "UserEmail" varchar(50) NULL,
    "ProductName" varchar(100) NULL,
    "ApiName" varchar(100) NULL,
    "OperationId" varchar(100) NULL,
    "ModelName" varchar(100) NULL,
    "IsStreaming" smallint NOT NULL,
    "PromptTokens" integer NOT NULL,
    "CompletionTokens" integer NOT NULL,
    "TotalTokens" integer NOT NULL
);
CREATE INDEX "indx_ExecDate" ON "ApimAoaiToken" ("ExecDateUTC");
CREATE INDEX "indx_ExecTime" ON "ApimAoaiToken" ("ExecTimeUTC")
"""

#: T-SQL type → the type each translation uses, as sqlglot names them (T-SQL's tinyint is
#: unsigned, its float 8 bytes: a double).
TYPE_MAP = {
    "sqlite": {
        "DATETIME": "DATETIME",
        "NVARCHAR": "NVARCHAR",
        "UTINYINT": "TINYINT",
        "INT": "INT",
        "FLOAT": "DOUBLE",
    },
    "postgres": {
        "DATETIME": "TIMESTAMP",
        "NVARCHAR": "VARCHAR",
        "UTINYINT": "SMALLINT",
        "INT": "INT",
        "FLOAT": "DOUBLE",
    },
}

PRICED = ["gpt-35-turbo", "gpt-35-turbo-16k", "gpt-4", "gpt-4-32k", "text-embedding-ada-002"]
UNPRICED = ["Unknown", "gpt-4o-2024-11-20", None]
OPERATION_IDS = [
    "ChatCompletions_Create",
    "chatcompletions_create",
    "Completions_Create",
    "Embeddings_Create",
    "Images_Generate",
    None,
]
N_ROWS = 300
N_COPIES = 4  # exact copies of the first row: the original had no key


# ----------------------------------------------------------------------------- the original DB


def _batches(script: str) -> list[str]:
    """The batches of a T-SQL script (split on GO lines)."""
    return [b for b in re.split(r"(?im)^\s*GO\s*$", script) if b.strip()]


def _tsql_statements(script: str) -> list[exp.Expression]:
    statements: list[exp.Expression] = []
    for batch in _batches(script):
        statements += [s for s in sqlglot.parse(batch, read="tsql") if s is not None]
    return statements


def _original_rates() -> list[tuple[str, float, float]]:
    """The rates the original script provisions (read from its INSERTs)."""
    rates = []
    for stmt in _tsql_statements(ORIGINAL_TSQL.read_text("utf-8")):
        if isinstance(stmt, exp.Insert):
            values = stmt.expression.expressions[0].expressions
            rates.append((values[0].name, float(values[1].name), float(values[2].name)))
    return rates


def _original_rows(*, as_text: bool) -> list[dict[str, Any]]:
    """A few hundred calls as the original function stored them (deterministic)."""
    rng = random.Random(20231201)
    start = datetime(2023, 12, 1, 8, 0, 0)
    rows = []
    for i in range(N_ROWS):
        when = start + timedelta(minutes=37 * i, milliseconds=rng.choice([0, 0, 3, 7, 120]) * 10)
        streaming = rng.random() < 0.3
        model = rng.choice(PRICED + UNPRICED)
        prompt = rng.randint(1, 4000)
        completion = 0 if model == "text-embedding-ada-002" else rng.randint(0, 2000)
        sub = rng.randint(1, 6)
        rows.append(
            {
                "ExecTimeUTC": when,
                "ExecDateUTC": when.replace(hour=0, minute=0, second=0, microsecond=0),
                "GatewayRegion": rng.choice(["China North 3", "East US", None]),
                "GatewayServiceName": "apim-aoai",
                "SubscriptionId": f"sub-{sub:02d}",
                "SubscriptionName": f"Team {sub}",
                "UserName": rng.choice(["Zoë O'Neil", "Li Wei", None]),
                "UserEmail": rng.choice(["zoe@example.com", None]),
                "ProductName": "openai-product",
                "ApiName": "Azure OpenAI",
                "OperationId": rng.choice(OPERATION_IDS),
                "ModelName": model,
                "IsStreaming": 1 if streaming else 0,
                "PromptTokens": prompt,
                "CompletionTokens": completion,
                "TotalTokens": prompt + completion,
            }
        )
    rows += [dict(rows[0]) for _ in range(N_COPIES)]
    if as_text:  # SQLite: text, as the original function's strings would be stored
        for i, row in enumerate(rows):
            when = row["ExecTimeUTC"]
            fmt = "%Y-%m-%d %H:%M:%S" if i % 2 else "%Y-%m-%d %H:%M:%S.%f"
            row["ExecTimeUTC"] = when.strftime(fmt)[: 23 if i % 2 == 0 else None]
            row["ExecDateUTC"] = when.strftime("%Y-%m-%d")
    return rows


def _raw(name: str, *cols: str) -> Any:
    """A lightweight, untyped table: values come back as the driver gives them."""
    return table(name, *(column(c) for c in cols))


def make_original(url: str, *, rates: list[tuple[str, float, float]] | None = None) -> Engine:
    """An engine on ``url`` holding the original two tables, filled."""
    engine = engine_from_url(url)
    backend = engine.dialect.name
    script = ORIGINAL_SQLITE_DDL if backend == "sqlite" else ORIGINAL_POSTGRES_DDL
    tok = _raw("ApimAoaiToken", *ORIGINAL_TOKEN_COLUMNS)
    rate = _raw("AoaiTokenRate", "ModelName", "PromptTokenRate", "CompletionTokenRate")
    with transaction(engine) as conn:
        for statement in script.split(";"):
            conn.exec_driver_sql(statement)
        conn.execute(tok.insert(), _original_rows(as_text=backend == "sqlite"))
        conn.execute(
            rate.insert(),
            [
                {"ModelName": m, "PromptTokenRate": p, "CompletionTokenRate": c}
                for m, p, c in (_original_rates() if rates is None else rates)
            ],
        )
    return engine


def original_values(engine: Engine) -> Counter[tuple[Any, ...]]:
    """The original columns of every call, as stored (a multiset: rows may be identical) — but
    a SQLite bare date ``'2023-12-01'``, which the upgrade writes as the same instant in
    SQLAlchemy's form ``'2023-12-01 00:00:00.000000'`` (so that reports see the day), counts as
    that form."""
    with transaction(engine) as conn:
        rows = conn.execute(select(_raw("ApimAoaiToken", *ORIGINAL_TOKEN_COLUMNS))).all()

    def instant(value: Any) -> Any:
        bare = isinstance(value, str) and len(value) == 10 and value[4] == value[7] == "-"
        return f"{value} 00:00:00.000000" if bare else value

    return Counter(tuple(instant(v) for v in r) for r in rows)


def token_sums(engine: Engine) -> tuple[Any, ...]:
    t = _raw("ApimAoaiToken", "PromptTokens", "CompletionTokens", "TotalTokens")
    with transaction(engine) as conn:
        return tuple(
            conn.execute(
                select(
                    func.count(),
                    func.sum(t.c.PromptTokens),
                    func.sum(t.c.CompletionTokens),
                    func.sum(t.c.TotalTokens),
                )
            ).one()
        )


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted (to compare a database before and after)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with transaction(engine) as conn:
        for name in sorted(inspect(conn).get_table_names()):
            cols = [c["name"] for c in inspect(conn).get_columns(name)]
            rows = conn.execute(select(_raw(name, *cols))).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _type_key(kind: Any) -> Any:
    """What a column's type is compared by: exact numerics by precision and scale (a money
    column), everything else by the Python type it reads as."""
    if isinstance(kind, Numeric) and not isinstance(kind, Float):
        return ("NUMERIC", kind.precision, kind.scale)
    return kind.python_type


def reflected_schema(engine: Engine) -> dict[str, Any]:
    """Columns (type, length, nullability), primary keys and indexes of every table."""
    insp = inspect(engine)
    schema: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        schema[name] = {
            "columns": {
                c["name"]: (
                    _type_key(c["type"]),
                    getattr(c["type"], "length", None),
                    c["nullable"],
                )
                for c in insp.get_columns(name)
            },
            "pk": insp.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in insp.get_indexes(name)
            ),
        }
    return schema


def model_schema(dialect: Any) -> dict[str, Any]:
    """What ``reflected_schema`` must show for this schema on ``dialect`` (from the models)."""
    return {
        t.name: {
            "columns": {
                c.name: (
                    _type_key(c.type.dialect_impl(dialect)),
                    getattr(c.type, "length", None),
                    c.nullable,
                )
                for c in t.columns
            },
            "pk": [c.name for c in t.primary_key.columns],
            "indexes": sorted(
                (ix.name, tuple(c.name for c in ix.columns), bool(ix.unique)) for ix in t.indexes
            ),
        }
        for t in SCHEMA_TABLES
    }


# ----------------------------------------------------------------------------- databases


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'original.db'}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty PostgreSQL database: on the server ``TEST_POSTGRES_URL`` names, else on the
    suite's throwaway cluster (conftest's ``pg_server``) where there is one, else skip."""
    server = os.environ.get("TEST_POSTGRES_URL")
    if not server:
        try:
            cluster = request.getfixturevalue("pg_server")
        except pytest.FixtureLookupError:
            pytest.skip("no PostgreSQL: set TEST_POSTGRES_URL to a server URL")
        yield str(cluster.new_database())
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = "t_migrate_" + uuid.uuid4().hex[:12]
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# ----------------------------------------------------------------------------- the fixture file


def _columns(create: exp.Expression) -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """name → (type, type parameters, nullable) of a parsed CREATE TABLE."""
    out = {}
    for cd in create.find_all(exp.ColumnDef):
        kind = cd.args["kind"]
        params = tuple(p.sql() for p in kind.expressions)
        not_null = any(
            isinstance(c.kind, exp.NotNullColumnConstraint) and not c.kind.args.get("allow_null")
            for c in cd.constraints
        )
        out[cd.name] = (kind.this.name, params, not not_null)
    return out


def _tables(statements: list[exp.Expression]) -> dict[str, dict[str, Any]]:
    return {
        s.this.this.name: _columns(s)
        for s in statements
        if isinstance(s, exp.Create) and s.kind == "TABLE"
    }


def test_original_tsql_is_what_the_translations_create_and_what_the_models_keep() -> None:
    tsql = _tables(_tsql_statements(ORIGINAL_TSQL.read_text("utf-8")))
    assert list(tsql["ApimAoaiToken"]) == list(ORIGINAL_TOKEN_COLUMNS)
    assert list(tsql["AoaiTokenRate"]) == ["ModelName", "PromptTokenRate", "CompletionTokenRate"]
    for dialect, script in (("sqlite", ORIGINAL_SQLITE_DDL), ("postgres", ORIGINAL_POSTGRES_DDL)):
        translated = _tables([s for s in sqlglot.parse(script, read=dialect) if s])
        expected = {
            t: {n: (TYPE_MAP[dialect][k], p, null) for n, (k, p, null) in cols.items()}
            for t, cols in tsql.items()
        }
        assert translated == expected, dialect
    # The models keep every original column with its Azure SQL type and nullability — but
    # the rates, FLOAT there, are exact NUMERICs now (schema v5: same name, same place).
    d = mssql.dialect()
    for name, cols in tsql.items():
        model = metadata.tables[name]
        for col_name, (kind, params, nullable) in cols.items():
            col = model.c[col_name]
            built = exp.DataType.build(str(col.type.compile(dialect=d)), dialect="tsql")
            got = (built.this.name, tuple(p.sql() for p in built.expressions))
            if (name, col_name) in MONEY_COLUMNS:
                assert kind == "FLOAT" and got == ("DECIMAL", ("27", "18")), col_name
            else:
                assert got == (kind, params)
            assert col.nullable is nullable, col_name
    indexes = {
        s.this.this.name: s.this.args["table"].name
        for s in _tsql_statements(ORIGINAL_TSQL.read_text("utf-8"))
        if isinstance(s, exp.Create) and "INDEX" in (s.kind or "")
    }
    assert indexes == {"indx_ExecDate": "ApimAoaiToken", "indx_ExecTime": "ApimAoaiToken"}
    assert {ix.name for ix in token_table.indexes} >= set(indexes)


# ----------------------------------------------------------------------------- the upgrade


def _check_upgrade(url: str) -> None:
    """The whole round trip on a database of the original schema at ``url``."""
    engine = make_original(url)
    try:
        before_values = original_values(engine)
        before_raw = _raw_rows_by_rowid(engine)  # SQLite: Id becomes the rowid
        before_sums = token_sums(engine)
        assert before_sums[0] == N_ROWS + N_COPIES

        result = upgrade(engine)

        # What it says it did.
        assert not result.up_to_date
        by_table = {t.table: t for t in result.tables}
        assert set(by_table) == {"ApimAoaiToken", "AoaiTokenRate"}
        tok = by_table["ApimAoaiToken"]
        assert tok.rows == N_ROWS + N_COPIES
        new_token_cols = [
            c.name for c in token_table.columns if c.name not in ORIGINAL_TOKEN_COLUMNS
        ]
        assert tok.columns_added == new_token_cols
        assert by_table["AoaiTokenRate"].rows == len(_original_rates())
        assert result.repriced == N_ROWS + N_COPIES
        lines = result.lines()
        assert lines[0].endswith("upgraded from the original APIM-AOAI-Proxy schema")
        assert any(f"{N_ROWS + N_COPIES} row(s) backfilled" in line for line in lines)
        assert any(line.startswith(f"{N_ROWS + N_COPIES} call(s) repriced") for line in lines)

        # The schema is the one db init creates, with the views, which answer.
        assert reflected_schema(engine) == model_schema(engine.dialect)
        _check_views_answer(engine)
        _check_reports_count_every_call(engine)

        # No row lost, the original columns' values unchanged, the sums the same.
        assert token_sums(engine) == before_sums
        assert original_values(engine) == before_values

        with transaction(engine) as conn:
            rows = conn.execute(select(token_table)).mappings().all()
            rates = conn.execute(select(rate_table)).mappings().all()
            versions = conn.execute(text_select_versions()).all()
        ids = [r["RequestId"] for r in rows]
        assert all(ids) and len(set(ids)) == len(ids)  # unique, even for identical rows
        assert len({r["Id"] for r in rows}) == len(rows)
        assert all(i.startswith(LEGACY_PREFIX) and len(i) <= 64 for i in ids)
        # the RequestId hashes the values as they were stored before the upgrade
        raw = before_raw or {r[0]: r[1:] for r in _raw_rows_with_id(engine)}
        for r in rows:
            assert r["RequestId"] == legacy_request_id(r["Id"], raw[r["Id"]])
            assert r["EventVersion"] == 1
            assert r["UsageSource"] == ("estimated" if r["IsStreaming"] == 1 else "reported")
            op = (r["OperationId"] or "").lower()
            expected_op = {
                "chatcompletions_create": "chat",
                "completions_create": "completions",
                "embeddings_create": "embeddings",
            }.get(op, "other")
            assert r["Operation"] == expected_op
            assert r["CachedTokens"] == 0 and r["ReasoningTokens"] == 0
            assert r["ModelKnown"] == (1 if normalize_model(r["ModelName"] or "").known else 0)
            assert r["IngestedAtUTC"] is not None
        assert Counter(r["UsageSource"] for r in rows) == Counter(
            "estimated" if v[ORIGINAL_TOKEN_COLUMNS.index("IsStreaming")] == 1 else "reported"
            for v in before_values.elements()
        )

        # The rates: the original values, and what the schema adds.
        original = {m: (p, c) for m, p, c in _original_rates()}
        assert {
            r["ModelName"]: (r["PromptTokenRate"], r["CompletionTokenRate"]) for r in rates
        } == (original)
        for r in rates:
            assert r["CachedPromptTokenRate"] == r["PromptTokenRate"]
            assert (r["Currency"], r["EffectiveFrom"], r["EffectiveTo"], r["Source"]) == (
                "USD",
                EPOCH,
                None,
                ORIGINAL_RATE_SOURCE,
            )
        rate_of = {r["ModelName"]: r for r in rates}

        # Cost: filled where the model has a rate, NULL (unpriced) where not.
        for r in rows:
            rate = rate_of.get(r["ModelName"])
            if rate is None:
                assert r["Cost"] is None and r["RateId"] is None
            else:
                expected = (
                    r["PromptTokens"] * rate["PromptTokenRate"]
                    + r["CompletionTokens"] * rate["CompletionTokenRate"]
                )
                assert r["Cost"] == pytest.approx(expected, rel=1e-12)
                assert (r["Currency"], r["RateId"]) == ("USD", rate["RateId"])
        assert result.priced == sum(1 for r in rows if r["ModelName"] in rate_of)
        assert "Unknown" in result.unpriced_models and "(none)" in result.unpriced_models
        assert [(v, d) for v, _at, d in versions] == [
            (
                SCHEMA_VERSION,
                "upgraded in place from the original APIM-AOAI-Proxy schema (db upgrade)",
            )
        ]

        # Again: nothing to do, nothing changed.
        snapshot = dump(engine)
        again = upgrade(engine)
        assert again.up_to_date
        assert again.lines() == [
            f"database {again.database}: already up to date (schema version {SCHEMA_VERSION})"
        ]
        assert dump(engine) == snapshot
        assert init_db(engine) == []

        # New events go in beside the old rows (v2 and v1), and a redelivery is a no-op.
        from conftest import new_v1, new_v2

        events = [new_v2(Model="gpt-35-turbo"), new_v2(), new_v1(ExecTimeUTC="2026-11-05 11:00:00")]
        batch = [RawEvent(json.dumps(e).encode(), f"t:{i}") for i, e in enumerate(events)]
        done = Ingestor(engine).ingest_batch(batch)
        assert (done.stored, done.duplicates, done.dead_lettered) == (3, 0, 0)
        redelivered = Ingestor(engine).ingest_batch(batch)
        assert (redelivered.stored, redelivered.duplicates) == (0, 3)
        with transaction(engine) as conn:
            t = token_table.c
            new = conn.execute(select(token_table).where(~t.RequestId.like("legacy:%"))).mappings()
            new_rows = list(new)
        assert len(new_rows) == 3
        assert {r["EventVersion"] for r in new_rows} == {1, 2}
        assert min(r["Id"] for r in new_rows) > max(r["Id"] for r in rows)
        priced_new = [r for r in new_rows if r["ModelName"] == "gpt-35-turbo"]
        assert priced_new and priced_new[0]["Cost"] == pytest.approx(
            100 * 1.5e-06 + 50 * 2e-06, rel=1e-12
        )
        after_values = original_values(engine)
        assert before_values - after_values == Counter()  # the old rows are all still there
        assert (after_values - before_values).total() == 3
        assert token_sums(engine)[0] == N_ROWS + N_COPIES + 3

        # The models themselves are untouched (the T-SQL generated from them is unchanged).
        assert ddl("mssql") == (ROOT / "sql" / "aoaieventdb.sql").read_text("utf-8")
    finally:
        engine.dispose()


def _check_reports_count_every_call(engine: Engine) -> None:
    """Every month's report counts every call of the month — its first day too (the original
    schema may store ``ExecDateUTC`` as a bare date, which SQLite compares as text)."""
    from aoai_helpers.analysis.report import chargeback_by_bu

    with transaction(engine) as conn:
        stamps = conn.execute(select(token_table.c.ExecTimeUTC)).scalars().all()
    per_month: dict[str, int] = {}
    for at in stamps:
        per_month[f"{at:%Y-%m}"] = per_month.get(f"{at:%Y-%m}", 0) + 1
    assert per_month
    for month, n in per_month.items():
        assert sum(line.calls for line in chargeback_by_bu(engine, month)) == n, month


def _check_views_answer(engine: Engine) -> None:
    """The views exist on the upgraded database and answer: per BU (no BU map: the
    subscription name) the calls, unpriced calls and cost of the call table itself."""
    assert {v.name for v in VIEWS} <= set(inspect(engine).get_view_names())
    with transaction(engine) as conn:
        daily = conn.exec_driver_sql(
            'SELECT "BusinessUnit", SUM("Calls"), SUM("UnpricedCalls"), SUM("Cost")'
            ' FROM "vw_AoaiChargebackDaily" GROUP BY "BusinessUnit"'
        ).all()
        calls = conn.exec_driver_sql(
            'SELECT "PriceStatus", COUNT(*), COUNT("Cost") FROM "vw_AoaiPricedCalls"'
            ' GROUP BY "PriceStatus"'
        ).all()
        rows = conn.execute(select(token_table.c.SubscriptionName, token_table.c.Cost)).all()
    expected: dict[str, list[Any]] = {}
    for name, cost in rows:
        sums = expected.setdefault(name, [0, 0, 0.0])
        sums[0] += 1
        sums[1] += cost is None
        sums[2] += cost or 0.0
    assert {r[0] for r in daily} == set(expected) == {f"Team {i}" for i in range(1, 7)}
    for bu, n, unpriced, cost in daily:
        assert (int(n), int(unpriced)) == tuple(expected[bu][:2])
        assert float(cost) == pytest.approx(expected[bu][2], rel=1e-12)
    status = {s: (int(n), int(c)) for s, n, c in calls}
    assert status["unpriced"][1] == 0 and status["priced"][0] == status["priced"][1]
    assert status["unpriced"][0] == sum(e[1] for e in expected.values()) > 0


def text_select_versions() -> Any:
    v = _raw("AoaiSchemaVersion", "Version", "AppliedAtUTC", "Description")
    return select(v)


def _raw_rows_by_rowid(engine: Engine) -> dict[int, tuple[Any, ...]]:
    """SQLite: the original columns of every row by rowid, as stored; {} elsewhere."""
    if engine.dialect.name != "sqlite":
        return {}
    names = ", ".join(f'"{c}"' for c in ORIGINAL_TOKEN_COLUMNS)
    with transaction(engine) as conn:
        rows = conn.exec_driver_sql(f'SELECT rowid, {names} FROM "ApimAoaiToken"').all()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def _raw_rows_with_id(engine: Engine) -> list[tuple[Any, ...]]:
    t = _raw("ApimAoaiToken", "Id", *ORIGINAL_TOKEN_COLUMNS)
    with transaction(engine) as conn:
        return [tuple(r) for r in conn.execute(select(t))]


def test_upgrade_sqlite(sqlite_url: str) -> None:
    _check_upgrade(sqlite_url)


@pytest.mark.postgres
def test_upgrade_postgresql(pg_url: str) -> None:
    _check_upgrade(pg_url)


def test_sqlite_upgrade_rebuilds_the_table_exactly_as_db_init_creates_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = make_original(sqlite_url)
    fresh = engine_from_url(str(tmp_path / "fresh.db"))
    try:
        upgrade(engine)
        init_db(fresh)

        def master(e: Engine) -> set[tuple[str, str]]:
            with transaction(e) as conn:
                rows = conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                ).all()
            return {(name, " ".join(sql.split())) for name, sql in rows}

        assert master(engine) == master(fresh)
        with transaction(engine) as conn:  # Id is the rowid, in the original order
            assert (
                conn.exec_driver_sql(
                    "SELECT COUNT(*) FROM ApimAoaiToken WHERE Id <> rowid"
                ).scalar()
                == 0
            )
    finally:
        engine.dispose()
        fresh.dispose()


def _check_failed_upgrade_changes_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the DDL (here: repricing) rolls back the whole upgrade."""
    engine = make_original(url)
    try:
        before = dump(engine)

        def broken(*_a: Any, **_k: Any) -> int:
            raise DatabaseError("database error: injected after the DDL")

        monkeypatch.setattr(migrate_module, "reprice", broken)
        with pytest.raises(DatabaseError, match="injected"):
            upgrade(engine)
        assert dump(engine) == before
        assert set(inspect(engine).get_table_names()) == {"ApimAoaiToken", "AoaiTokenRate"}
        cols = [c["name"] for c in inspect(engine).get_columns("ApimAoaiToken")]
        assert cols == list(ORIGINAL_TOKEN_COLUMNS)
        monkeypatch.undo()
        assert upgrade(engine).tables  # and it works once the fault is gone
    finally:
        engine.dispose()


def test_failed_upgrade_changes_nothing_sqlite(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_failed_upgrade_changes_nothing(sqlite_url, monkeypatch)


@pytest.mark.postgres
def test_failed_upgrade_changes_nothing_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _check_failed_upgrade_changes_nothing(pg_url, monkeypatch)


def _check_duplicate_rates_are_refused(url: str) -> None:
    rates = [*_original_rates(), ("gpt-4", 1e-05, 2e-05), ("gpt-4", 2e-05, 3e-05)]
    engine = make_original(url, rates=rates)
    try:
        before = dump(engine)
        with pytest.raises(ConfigError, match=r"more than one rate for gpt-4 \(3 rows\)"):
            upgrade(engine)
        assert dump(engine) == before
    finally:
        engine.dispose()


def test_duplicate_original_rates_are_refused_before_any_change(sqlite_url: str) -> None:
    _check_duplicate_rates_are_refused(sqlite_url)


@pytest.mark.postgres
def test_duplicate_original_rates_are_refused_postgresql(pg_url: str) -> None:
    _check_duplicate_rates_are_refused(pg_url)


def test_sqlite_upgrade_keeps_a_dbas_own_index_and_view(sqlite_url: str) -> None:
    engine = make_original(sqlite_url)
    try:
        with transaction(engine) as conn:
            conn.exec_driver_sql("CREATE INDEX my_by_model ON ApimAoaiToken (ModelName)")
            conn.exec_driver_sql(
                "CREATE VIEW my_usage AS SELECT SubscriptionName, SUM(TotalTokens) AS tokens "
                "FROM ApimAoaiToken GROUP BY SubscriptionName"
            )
            before = conn.exec_driver_sql("SELECT * FROM my_usage ORDER BY 1").all()
        upgrade(engine)
        with transaction(engine) as conn:
            assert conn.exec_driver_sql("SELECT * FROM my_usage ORDER BY 1").all() == before
        names = {ix["name"] for ix in inspect(engine).get_indexes("ApimAoaiToken")}
        assert "my_by_model" in names
    finally:
        engine.dispose()


def test_sqlite_table_with_unknown_columns_is_refused(sqlite_url: str) -> None:
    engine = make_original(sqlite_url)
    try:
        with transaction(engine) as conn:
            conn.exec_driver_sql("ALTER TABLE ApimAoaiToken ADD COLUMN CostCenter nvarchar(20)")
        with pytest.raises(ConfigError, match=r"CostCenter.*would drop them"):
            upgrade(engine)
        assert "RequestId" not in {c["name"] for c in inspect(engine).get_columns("ApimAoaiToken")}
    finally:
        engine.dispose()


def test_upgrade_of_a_current_database_is_up_to_date(tmp_path: Path) -> None:
    engine = engine_from_url(str(tmp_path / "new.db"))
    try:
        created = upgrade(engine)  # an empty database: created as db init would
        assert not created.up_to_date and not created.tables
        assert any(c.startswith("seeded") for c in created.schema_changes)
        assert reflected_schema(engine) == model_schema(engine.dialect)
        assert upgrade(engine).up_to_date
    finally:
        engine.dispose()


def test_upgrade_adds_what_an_older_version_of_this_schema_lacks(tmp_path: Path) -> None:
    engine = engine_from_url(str(tmp_path / "old.db"))
    try:
        init_db(engine)
        with transaction(engine) as conn:
            conn.exec_driver_sql("DROP INDEX ix_ApimAoaiToken_Sub_Time")
        result = upgrade(engine)
        assert result.tables == []
        assert result.schema_changes == ["created index ix_ApimAoaiToken_Sub_Time"]
        assert result.lines()[0].endswith(": upgraded")
    finally:
        engine.dispose()


def test_legacy_request_id() -> None:
    values = ("2023-12-01 08:00:00", "2023-12-01", "East US", *[None] * 9, 0, 10, 5, 15)
    rid = legacy_request_id(17, values)
    assert re.fullmatch(r"legacy:[0-9a-f]{32}:17", rid)
    assert legacy_request_id(17, values) == rid  # stable
    assert legacy_request_id(18, values) != rid  # identical rows stay distinct
    assert legacy_request_id(17, (*values[:-1], 16)) != rid  # content matters
    # datetimes are written as T-SQL's CONVERT(NVARCHAR(23), …, 121) writes them
    as_datetime = (datetime(2023, 12, 1, 8, 0, 0, 3000), *values[1:])
    as_text = ("2023-12-01 08:00:00.003", *values[1:])
    assert legacy_request_id(1, as_datetime) == legacy_request_id(1, as_text)
    assert len(legacy_request_id(2**63 - 1, values)) <= 64


# ----------------------------------------------------------------------------- the CLI


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*argv, cwd=cwd)


def _one_line_error(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "original.db"
    make_original(f"sqlite:///{path}").dispose()

    init = _run(tmp_path, "db", "init", "--db", str(path))
    assert init.returncode == 1
    assert "run `python -m aoai_helpers db upgrade`" in _one_line_error(init.stderr)
    report = _run(tmp_path, "report", "--db", str(path))
    assert report.returncode == 1
    assert "db upgrade" in _one_line_error(report.stderr)

    first = _run(tmp_path, "db", "upgrade", "--db", str(path))
    assert first.returncode == 0, first.stderr
    out = first.stdout.splitlines()
    assert out[0] == f"database sqlite:///{path}: upgraded from the original APIM-AOAI-Proxy schema"
    assert out[1].startswith("  ApimAoaiToken: 25 column(s) added (Id, RequestId, ")
    assert f"{N_ROWS + N_COPIES} row(s) backfilled" in out[1]
    assert out[2].startswith("  AoaiTokenRate: 6 column(s) added (RateId, ")
    assert any(line.startswith(f"  {N_ROWS + N_COPIES} call(s) repriced: ") for line in out)
    assert out[-1] == f"  schema version {SCHEMA_VERSION} recorded"

    second = _run(tmp_path, "db", "upgrade", "--db", str(path))
    assert (second.returncode, second.stdout) == (
        0,
        f"database sqlite:///{path}: already up to date (schema version {SCHEMA_VERSION})\n",
    )
    assert _run(tmp_path, "db", "init", "--db", str(path)).returncode == 0
    months = _run(tmp_path, "report", "--db", str(path), "--month", "2023-12")
    assert months.returncode == 0, months.stderr
    assert "Team 1" in months.stdout


def test_cli_upgrade_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.db"
    assert cli.main(["db", "upgrade", "--db", str(missing)]) == 1
    assert "no database file at" in _one_line_error(capsys.readouterr().err)
    assert not missing.exists()

    path = tmp_path / "dupes.db"
    make_original(f"sqlite:///{path}", rates=[("gpt-4", 3e-05, 6e-05)] * 2).dispose()
    assert cli.main(["db", "upgrade", "--db", str(path)]) == 1
    assert "more than one rate for gpt-4" in _one_line_error(capsys.readouterr().err)

    assert cli.main(["db", "ddl", "--from-original", "--dialect", "sqlite"]) == 1
    assert "T-SQL only" in _one_line_error(capsys.readouterr().err)


# ----------------------------------------------------------------------------- T-SQL scripts


def test_migration_script_is_generated_from_the_models() -> None:
    assert (ROOT / "sql" / "migrate_from_original.sql").read_text("utf-8") == migration_tsql(), (
        "sql/migrate_from_original.sql is stale: "
        "python -m aoai_helpers db ddl --from-original > sql/migrate_from_original.sql"
    )


@pytest.mark.parametrize("name", ["aoaieventdb.sql", "migrate_from_original.sql"])
def test_every_statement_of_the_sql_scripts_parses_as_tsql(name: str) -> None:
    script = (ROOT / "sql" / name).read_text("utf-8")
    batches = _batches(script)
    assert len(batches) > 5
    for batch in batches:
        parsed = sqlglot.parse(batch, read="tsql")  # raises on a syntax error
        assert parsed and all(s is not None for s in parsed), batch
        # sqlglot falls back to an opaque Command for what it does not understand
        opaque = [n for s in parsed if s for n in s.walk() if isinstance(n, exp.Command)]
        assert not opaque, batch


def test_migration_script_is_guarded_and_complete() -> None:
    statements = _tsql_statements(migration_tsql())
    added: set[tuple[str, str]] = set()
    indexes: set[str] = set()
    views: list[str] = []
    altered: set[tuple[str, str]] = set()
    for stmt in statements:
        if isinstance(stmt, exp.IfBlock):
            for action in stmt.find_all(exp.AlterColumn):
                alter = action.find_ancestor(exp.Alter)
                if alter is not None and action.args["dtype"].this.name == "DECIMAL":
                    altered.add((alter.this.name, action.name))
            for alter in stmt.find_all(exp.Alter):
                for col in alter.find_all(exp.ColumnDef):
                    if alter.args.get("actions") and col.parent is alter:
                        added.add((alter.this.name, col.name))
            for create in stmt.find_all(exp.Create):
                if "INDEX" in (create.kind or ""):
                    indexes.add(create.this.this.name)
            continue
        # Unguarded: only SET, UPDATEs of rows that still lack their values, the rebuild
        # of the daily rollup from the calls (the same content however often it runs), and
        # the views (CREATE OR ALTER: the same view however often it runs).
        if isinstance(stmt, exp.Create) and stmt.kind == "VIEW":
            assert stmt.args.get("replace"), stmt.sql("tsql")  # OR ALTER
            views.append(stmt.this.name)
            continue
        if isinstance(stmt, (exp.Delete, exp.Insert)):
            assert stmt.find(exp.Table).name == daily_table.name, stmt.sql("tsql")
            continue
        assert isinstance(stmt, (exp.Set, exp.Update)), stmt.sql("tsql")
        if isinstance(stmt, exp.Update):
            where = stmt.args["where"].sql("tsql")
            assert " IS NULL" in where, where
    for model in (token_table, rate_table):
        original = set(ORIGINAL_TOKEN_COLUMNS) if model is token_table else {"ModelName"}
        original |= {"PromptTokenRate", "CompletionTokenRate"} if model is rate_table else set()
        for col in model.columns:
            if col.name not in original:
                assert (model.name, col.name) in added, f"{model.name}.{col.name} never added"
    assert indexes == {ix.name for t in SCHEMA_TABLES for ix in t.indexes}
    assert views == [v.name for v in VIEWS]
    assert altered == set(MONEY_COLUMNS)  # every money column made exact where it is not
    assert statements[-1].sql("tsql") == "SET NOEXEC OFF"


def test_generated_schema_script_is_still_the_models() -> None:
    assert (ROOT / "sql" / "aoaieventdb.sql").read_text("utf-8") == ddl("mssql")
    assert "[Description] NVARCHAR(200) NULL" in ddl("mssql")


# ----------------------------------------------------------------------------- ingest on SQL Server


def _qmark() -> Any:
    """The mssql dialect as pyodbc configures it (qmark parameters)."""
    return mssql.dialect(paramstyle="qmark")


def test_mssql_row_insert_is_a_merge_keyed_on_request_id() -> None:
    sql, names, positional = row_insert(_qmark())
    cols = ", ".join(f"[{c}]" for c in ROW_COLUMNS)
    expected = (
        "MERGE INTO [ApimAoaiToken] WITH (HOLDLOCK) AS t"
        f" USING (VALUES ({', '.join('?' * len(ROW_COLUMNS))})) AS s ({cols})"
        " ON t.[RequestId] = s.[RequestId]"
        f" WHEN NOT MATCHED THEN INSERT ({cols})"
        f" VALUES ({', '.join(f's.[{c}]' for c in ROW_COLUMNS)});"
    )
    assert sql == expected
    assert (names, positional) == (list(ROW_COLUMNS), True)  # row tuples go in as they are

    merge = sqlglot.parse_one(sql, read="tsql")
    assert isinstance(merge, exp.Merge)
    assert [h.sql("tsql") for h in merge.this.args["hints"]] == ["WITH (HOLDLOCK)"]
    using = merge.args["using"]
    assert [c.name for c in using.args["alias"].columns] == list(ROW_COLUMNS)
    assert len(using.expressions[0].expressions) == len(ROW_COLUMNS)
    assert merge.args["on"].sql("tsql") == "t.[RequestId] = s.[RequestId]"
    (when,) = merge.args["whens"].expressions
    assert when.args["matched"] is False
    insert = when.args["then"]
    assert [c.name for c in insert.this.expressions] == list(ROW_COLUMNS)
    assert [c.name for c in insert.expression.expressions] == list(ROW_COLUMNS)


def test_mssql_named_parameters_follow_the_row_layout() -> None:
    sql, names, positional = row_insert(mssql.dialect())
    assert not positional and names == list(ROW_COLUMNS)
    assert f"USING (VALUES ({', '.join(':' + c for c in ROW_COLUMNS)}))" in sql
    sqlglot.parse_one(sql, read="tsql")


def test_mssql_dead_letter_insert_is_a_merge_keyed_on_the_body_hash() -> None:
    d = _qmark()
    sql = str(skip_existing_insert(dead_letter, "RawSha256", d).compile(dialect=d))
    cols = [c.name for c in dead_letter.columns if not c.primary_key]
    assert sql.startswith("MERGE INTO [IngestDeadLetter] WITH (HOLDLOCK) AS t USING (VALUES (?")
    assert "ON t.[RawSha256] = s.[RawSha256] WHEN NOT MATCHED THEN INSERT" in sql
    merge = sqlglot.parse_one(sql, read="tsql")
    assert [c.name for c in merge.args["using"].args["alias"].columns] == cols


def test_ingestor_on_mssql_uses_the_merge() -> None:
    sent: list[Any] = []
    engine = create_mock_engine(
        "mssql+pyodbc://", lambda sql, *a, **k: sent.append(sql), paramstyle="qmark"
    )
    ingestor = Ingestor(engine)  # type: ignore[arg-type]  # a mock engine: it only compiles
    assert ingestor._row_sql == row_insert(engine.dialect)[0]
    assert ingestor._skips_conflicts and not ingestor._exact_rowcount
    assert ingestor._positional and ingestor._param_names == list(ROW_COLUMNS)
    assert sent == []  # building it executed nothing


def test_counts_are_exact_when_the_driver_gives_no_rowcount(tmp_path: Path) -> None:
    """The path SQL Server takes (pyodbc has no executemany total): rows a concurrent ingester
    stored between this batch's read and its write count as duplicates, not as stored."""
    from conftest import new_v2

    engine = engine_from_url(str(tmp_path / "race.db"))
    try:
        init_db(engine)
        events = [new_v2() for _ in range(6)]
        batch = [RawEvent(json.dumps(e).encode(), f"t:{i}") for i, e in enumerate(events)]
        ours = Ingestor(engine)
        ours._exact_rowcount = False
        prepared = ours._prepare(batch)
        other = Ingestor(engine).ingest_batch(batch[:2])  # wins the race for two calls
        assert other.stored == 2
        done = ours._store(prepared)
        assert (done.stored, done.duplicates) == (4, 2)
        again = ours.ingest_batch(batch)
        assert (again.stored, again.duplicates) == (0, 6)
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- mssql URLs, pyodbc


MSSQL_URL = "mssql+pyodbc://billing:s3cr3t-pw@server.database.windows.net/usage?driver=ODBC+Driver+18+for+SQL+Server"


@pytest.mark.skipif(importlib.util.find_spec("pyodbc") is not None, reason="pyodbc is installed")
def test_mssql_url_without_pyodbc_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        engine_from_url(MSSQL_URL)
    message = str(info.value)
    assert message.startswith("no driver for mssql+pyodbc: No module named 'pyodbc'")
    assert "pip install 'apim-aoai-proxy[mssql]'" in message and "ODBC driver" in message
    assert "\n" not in message and "s3cr3t" not in message
    for argv in (["db", "upgrade"], ["db", "init"], ["report"]):
        run = _run(tmp_path, *argv, "--db", MSSQL_URL)
        assert run.returncode == 1, run
        err = _one_line_error(run.stderr)
        assert "no driver for mssql+pyodbc" in err and "s3cr3t" not in err


def _fake_pyodbc(drivers: list[str]) -> types.ModuleType:
    """Just enough of pyodbc for SQLAlchemy to build an engine (no connection is made)."""
    fake = types.ModuleType("pyodbc")
    fake.version = "5.2.0"  # type: ignore[attr-defined]
    fake.paramstyle = "qmark"  # type: ignore[attr-defined]
    fake.drivers = lambda: list(drivers)  # type: ignore[attr-defined]
    fake.Cursor = type("Cursor", (), {"nextset": lambda self: None})  # type: ignore[attr-defined]
    fake.SQL_DATETIMEOFFSET = -155  # type: ignore[attr-defined]
    return fake


def test_mssql_url_naming_a_missing_odbc_driver_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyodbc", _fake_pyodbc(["FreeTDS"]))
    with pytest.raises(ConfigError) as info:
        engine_from_url(MSSQL_URL)
    assert str(info.value).startswith(
        "ODBC driver 'ODBC Driver 18 for SQL Server' is not installed (installed: FreeTDS)"
    )
    assert "s3cr3t" not in str(info.value) and "\n" not in str(info.value)
    odbc = "mssql+pyodbc:///?odbc_connect=Driver%3D%7BODBC+Driver+17+for+SQL+Server%7D%3BPwd%3Dx"
    with pytest.raises(ConfigError, match="'ODBC Driver 17 for SQL Server' is not installed"):
        engine_from_url(odbc)
    engine = engine_from_url(MSSQL_URL.replace("ODBC+Driver+18+for+SQL+Server", "FreeTDS"))
    assert engine.dialect.name == "mssql"
    assert row_insert(engine.dialect)[0].startswith("MERGE INTO [ApimAoaiToken] WITH (HOLDLOCK)")
    engine.dispose()


def test_pyodbc_is_imported_only_when_an_mssql_url_is_used(tmp_path: Path) -> None:
    script = f"""
import sys
class Spy:
    seen = []
    def find_spec(self, name, path=None, target=None):
        if name == "pyodbc":
            Spy.seen.append(name)
        return None
sys.meta_path.insert(0, Spy())
from aoai_helpers.cli import main as cli
from aoai_helpers.pipeline import ingest
from aoai_helpers.pipeline import upgrade as migrate
from aoai_helpers.db import engine
assert cli.main(["db", "init", "--db", {str(tmp_path / "x.db")!r}]) == 0
assert cli.main(["db", "upgrade", "--db", {str(tmp_path / "x.db")!r}]) == 0
assert Spy.seen == [], "pyodbc imported without an mssql URL"
try:
    engine.engine_from_url("mssql+pyodbc://u@h/d?driver=X")
except Exception:
    pass
assert Spy.seen == ["pyodbc"], Spy.seen
print("ok")
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "ok"
