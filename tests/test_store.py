"""Tests for aoai_helpers.db.tables, .engine and .schema (tables, schema init/upgrade, URLs) and aoai_helpers.config."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.dialects import mssql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateTable

from aoai_helpers.config import db_url
from aoai_helpers.db import schema
from aoai_helpers.db.engine import (
    DEFAULT_DB_URL,
    engine_from_url,
    masked_url,
    normalize_url,
    transaction,
    url_from_odbc,
)
from aoai_helpers.db.schema import SCHEMA_VERSION, init_db
from aoai_helpers.db.tables import bu_map, dead_letter, rate_table, token_table
from aoai_helpers.exceptions import ConfigError, DatabaseError

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

TABLES = {
    "ApimAoaiToken",
    "AoaiTokenRate",
    "BusinessUnitMap",
    "ReconcileState",
    "IngestDeadLetter",
    "AoaiSchemaVersion",
    "AoaiUsageDaily",
}

#: The original ApimAoaiToken string columns and their nvarchar lengths (contract §4).
ORIGINAL_STRINGS = {
    "GatewayRegion": 100,
    "GatewayServiceName": 150,
    "SubscriptionId": 50,
    "SubscriptionName": 100,
    "UserName": 50,
    "UserEmail": 50,
    "ProductName": 100,
    "ApiName": 100,
    "OperationId": 100,
    "ModelName": 100,
}

#: The original project's table, as its T-SQL script created it (types SQLite accepts).
ORIGINAL_DDL = """
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
)
"""


@pytest.fixture
def bare_engine(tmp_path: Path) -> Any:
    """An engine on a SQLite file that does not exist yet (no schema)."""
    engine = engine_from_url(str(tmp_path / "bare.db"))
    yield engine
    engine.dispose()


def columns(engine: Engine, table: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in inspect(engine).get_columns(table)}


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


# ----------------------------------------------------------------------------- init_db


def test_init_db_creates_the_seven_tables(bare_engine: Engine) -> None:
    changes = init_db(bare_engine)
    assert table_names(bare_engine) == TABLES
    assert sorted(c for c in changes if c.startswith("created table")) == sorted(
        f"created table {t}" for t in TABLES
    )
    assert changes[-1] == f"schema version {SCHEMA_VERSION}"
    with transaction(bare_engine) as conn:
        assert conn.execute(text("SELECT Version FROM AoaiSchemaVersion")).scalars().all() == [
            SCHEMA_VERSION
        ]


#: How each dialect reflects the contract's datetime / float / varbinary types.
TYPE_NAMES = {
    "sqlite": {"datetime": "DATETIME", "float": "FLOAT", "blob": "BLOB"},
    "postgresql": {"datetime": "TIMESTAMP", "float": "NUMERIC(27, 18)", "blob": "BYTEA"},
}


def test_token_table_keeps_the_original_columns_and_types(engine: Engine) -> None:
    cols = columns(engine, "ApimAoaiToken")
    names = TYPE_NAMES[engine.dialect.name]
    for name in ("ExecTimeUTC", "ExecDateUTC"):
        assert str(cols[name]["type"]) == names["datetime"]
        assert cols[name]["nullable"] is False
    for name, length in ORIGINAL_STRINGS.items():
        assert getattr(cols[name]["type"], "length", None) == length, name
        assert cols[name]["nullable"] is True, name
    assert cols["IsStreaming"]["nullable"] is False
    for name in ("PromptTokens", "CompletionTokens", "TotalTokens"):
        assert str(cols[name]["type"]) == "INTEGER"
        assert cols[name]["nullable"] is False
    # The original 16 columns come first, in their original order, after the identity key.
    assert list(cols)[1:17] == [
        "ExecTimeUTC",
        "ExecDateUTC",
        *ORIGINAL_STRINGS,
        "IsStreaming",
        "PromptTokens",
        "CompletionTokens",
        "TotalTokens",
    ]
    for name in ("RequestId", "UsageSource", "Cost", "CachedTokens", "ReasoningTokens"):
        assert name in cols
    assert cols["Cost"]["nullable"] is True  # NULL = unpriced


def test_token_table_indexes(engine: Engine) -> None:
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("ApimAoaiToken")}
    assert indexes["indx_ExecDate"]["column_names"] == ["ExecDateUTC"]
    assert indexes["indx_ExecTime"]["column_names"] == ["ExecTimeUTC"]
    unique = [ix for ix in indexes.values() if ix["unique"]]
    assert [ix["column_names"] for ix in unique] == [["RequestId"]]


def test_other_tables_columns(engine: Engine) -> None:
    rate = columns(engine, "AoaiTokenRate")
    assert str(rate["ModelName"]["type"]) == "VARCHAR(100)"
    for name in ("ModelName", "PromptTokenRate", "CompletionTokenRate", "EffectiveFrom"):
        assert rate[name]["nullable"] is False, name
    names = TYPE_NAMES[engine.dialect.name]
    assert str(rate["PromptTokenRate"]["type"]) == names["float"]
    assert {"CachedPromptTokenRate", "Currency", "EffectiveTo"} <= set(rate)
    assert set(columns(engine, "BusinessUnitMap")) >= {
        "SubscriptionId",
        "BusinessUnit",
        "CostCentre",
    }
    dead = columns(engine, "IngestDeadLetter")
    assert str(dead["RawBody"]["type"]) == names["blob"]
    assert {"Reason", "Source", "ReceivedAtUTC"} <= set(dead)


def test_init_twice_changes_nothing(bare_engine: Engine) -> None:
    assert init_db(bare_engine) != []
    assert init_db(bare_engine) == []


def test_upgrade_adds_a_missing_nullable_column(tmp_path: Path) -> None:
    """A database made by an older version of our schema (no ReportedModel) is upgraded."""
    path = tmp_path / "old.db"
    ddl = str(CreateTable(token_table).compile(dialect=sqlite.dialect()))
    old_ddl = "\n".join(line for line in ddl.splitlines() if "ReportedModel" not in line)
    assert old_ddl != ddl
    con = sqlite3.connect(path)
    con.execute(old_ddl)
    con.execute(
        "INSERT INTO ApimAoaiToken (ExecTimeUTC, ExecDateUTC, IsStreaming, PromptTokens, "
        "CompletionTokens, TotalTokens, RequestId, EventVersion, Operation, UsageSource, "
        "IngestedAtUTC) VALUES ('2026-11-05 10:00:00.000000', '2026-11-05 00:00:00.000000', "
        "0, 1, 2, 3, 'old-row', 2, 'chat', 'reported', '2026-11-05 10:00:00.000000')"
    )
    con.commit()
    con.close()

    engine = engine_from_url(str(path))
    try:
        changes = init_db(engine)
        assert "added column ApimAoaiToken.ReportedModel" in changes
        assert "created table ApimAoaiToken" not in changes
        assert "created index ux_ApimAoaiToken_RequestId" in changes
        cols = columns(engine, "ApimAoaiToken")
        assert cols["ReportedModel"]["nullable"] is True
        assert getattr(cols["ReportedModel"]["type"], "length", None) == 100
        with transaction(engine) as conn:
            row = conn.execute(text("SELECT RequestId, ReportedModel FROM ApimAoaiToken")).one()
        assert tuple(row) == ("old-row", None)  # the data survives
        assert init_db(engine) == []
    finally:
        engine.dispose()


def test_upgrade_adds_a_missing_column_with_a_default(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ddl = str(CreateTable(token_table).compile(dialect=sqlite.dialect()))
    con = sqlite3.connect(path)
    con.execute("\n".join(line for line in ddl.splitlines() if "CachedTokens" not in line))
    con.commit()
    con.close()
    engine = engine_from_url(str(path))
    try:
        assert "added column ApimAoaiToken.CachedTokens" in init_db(engine)
        col = columns(engine, "ApimAoaiToken")["CachedTokens"]
        assert col["nullable"] is False
        assert col["default"] == "0"
    finally:
        engine.dispose()


@pytest.fixture
def original_db(tmp_path: Path) -> Path:
    """A SQLite file holding the original project's ApimAoaiToken table."""
    path = tmp_path / "original.db"
    con = sqlite3.connect(path)
    con.execute(ORIGINAL_DDL)
    con.commit()
    con.close()
    return path


def test_original_schema_table_asks_for_the_migration(original_db: Path) -> None:
    engine = engine_from_url(str(original_db))
    try:
        with pytest.raises(ConfigError, match="migration") as info:
            init_db(engine)
        assert "ApimAoaiToken" in str(info.value)
        assert (
            "predates this schema (no Id, RequestId, EventVersion, Operation, UsageSource,"
            in str(info.value)
        )
        assert "RequestId" not in columns(engine, "ApimAoaiToken")  # not half-altered
    finally:
        engine.dispose()


def test_failed_init_db_leaves_nothing_behind(original_db: Path) -> None:
    engine = engine_from_url(str(original_db))
    try:
        with pytest.raises(ConfigError):
            init_db(engine)
        assert table_names(engine) == {"ApimAoaiToken"}
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- transaction


def test_transaction_turns_driver_errors_into_database_error(engine: Engine) -> None:
    with (
        pytest.raises(DatabaseError, match=r'no such table: Nope|relation "nope" does not exist'),
        transaction(engine) as conn,
    ):
        conn.execute(text("SELECT * FROM Nope"))


def test_transaction_rolls_back_on_error(engine: Engine) -> None:
    with pytest.raises(DatabaseError), transaction(engine) as conn:
        conn.execute(bu_map.insert().values(SubscriptionId="s1", BusinessUnit="Finance"))
        conn.execute(bu_map.insert().values(SubscriptionId="s1", BusinessUnit="Legal"))  # dup key
    with transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(bu_map)).scalar() == 0


# ----------------------------------------------------------------------------- URLs


def test_masked_url_hides_the_password() -> None:
    masked = masked_url("postgresql+psycopg://billing:s3cr3t@db.example.com:5432/usage")
    assert masked == "postgresql+psycopg://billing:***@db.example.com:5432/usage"
    assert masked_url("sqlite:///data/aoai_usage.db") == "sqlite:///data/aoai_usage.db"
    assert masked_url("::not a url::") == "<unparsable database URL>"


def test_masked_url_hides_the_password_inside_odbc_connect() -> None:
    url = url_from_odbc(
        "Driver={ODBC Driver 18 for SQL Server};Server=tcp:x,1433;Uid=a;Pwd=s3cr3t;"
    )
    assert "s3cr3t" not in masked_url(url)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, DEFAULT_DB_URL),
        ("", DEFAULT_DB_URL),
        ("   ", DEFAULT_DB_URL),
        ("usage.db", "sqlite:///usage.db"),
        ("data/usage.db", "sqlite:///data/usage.db"),
        ("/var/lib/aoai/usage.db", "sqlite:////var/lib/aoai/usage.db"),
        (Path("data") / "x.db", "sqlite:///data/x.db"),
        (" sqlite:///x.db ", "sqlite:///x.db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_normalize_url(given: Any, expected: str) -> None:
    assert normalize_url(given) == expected


def test_default_url_is_a_sqlite_file_under_data() -> None:
    assert DEFAULT_DB_URL == "sqlite:///data/aoai_usage.db"


def test_url_from_odbc_quotes_the_connection_string() -> None:
    odbc = "Driver={ODBC Driver 18 for SQL Server};Server=tcp:x.database.windows.net,1433;Pwd=a+b&c=d%;"
    url = url_from_odbc(odbc)
    assert url == "mssql+pyodbc:///?odbc_connect=" + quote_plus(odbc)
    assert " " not in url and ";" not in url and "&c=" not in url
    parsed = make_url(url)
    assert parsed.drivername == "mssql+pyodbc"
    assert parsed.query["odbc_connect"] == odbc  # round-trips exactly


@pytest.mark.skipif(importlib.util.find_spec("pyodbc") is not None, reason="pyodbc is installed")
def test_mssql_url_without_pyodbc_says_what_to_install() -> None:
    with pytest.raises(ConfigError, match=r"no driver for mssql\+pyodbc") as info:
        engine_from_url(
            "mssql+pyodbc://user:pw@server.database.windows.net/db?driver=ODBC+Driver+18"
        )
    assert "pip install 'apim-aoai-proxy[mssql]'" in str(info.value)
    assert "ODBC driver" in str(info.value)
    assert "pw@" not in str(info.value)


def test_engine_from_url_creates_the_sqlite_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "usage.db"
    engine = engine_from_url(str(path))
    try:
        assert path.parent.is_dir()
        init_db(engine)
        assert path.is_file()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


@pytest.mark.parametrize("below", ["sub/usage.db", "usage.db"])
def test_engine_from_url_under_a_regular_file_is_a_config_error(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="SQLite"):
        engine_from_url(f"{blocker}/{below}")


@pytest.mark.parametrize(
    ("url", "message"),
    [("://x", "not a database URL"), ("nosuchdb+driver://x/y", r"no driver for nosuchdb\+driver")],
)
def test_engine_from_url_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        engine_from_url(url)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        (
            "sqlite:///explicit.db",
            {"AOAI_DB_URL": "sqlite:///env.db", "AOAI_DB_STORE_CONNECTION": "Server=x"},
            "sqlite:///explicit.db",
        ),
        ("explicit.db", {}, "sqlite:///explicit.db"),
        (
            None,
            {"AOAI_DB_URL": "env.db", "AOAI_DB_STORE_CONNECTION": "Server=x"},
            "sqlite:///env.db",
        ),
        (
            None,
            {"AOAI_DB_URL": "", "AOAI_DB_STORE_CONNECTION": "Server=x;Pwd=y"},
            "mssql+pyodbc:///?odbc_connect=Server%3Dx%3BPwd%3Dy",
        ),
        ("", {"AOAI_DB_STORE_CONNECTION": "Server=x"}, "mssql+pyodbc:///?odbc_connect=Server%3Dx"),
        (None, {}, DEFAULT_DB_URL),
    ],
)
def test_db_url_precedence(explicit: str | None, env: dict[str, str], expected: str) -> None:
    assert db_url(explicit, env=env) == expected


def test_db_url_falls_back_to_a_specs_database_after_the_environment() -> None:
    spec_url = "sqlite:///spec.db"
    assert db_url(None, spec_url, {}) == spec_url
    assert db_url(None, spec_url, {"AOAI_DB_URL": "sqlite:///env.db"}) == "sqlite:///env.db"
    assert db_url("sqlite:///arg.db", spec_url, {"AOAI_DB_URL": "sqlite:///env.db"}) == (
        "sqlite:///arg.db"
    )


def test_db_url_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert db_url() == DEFAULT_DB_URL  # conftest removed every AOAI_* variable
    monkeypatch.setenv("AOAI_DB_URL", "postgresql+psycopg://u@h/db")
    assert db_url() == "postgresql+psycopg://u@h/db"


# ----------------------------------------------------------------------------- Azure SQL DDL


def test_mssql_ddl_keeps_the_original_types() -> None:
    ddl = str(CreateTable(token_table).compile(dialect=mssql.dialect()))
    assert "[IsStreaming] TINYINT NOT NULL" in ddl
    assert "[ExecTimeUTC] DATETIME NOT NULL" in ddl
    assert "[ExecDateUTC] DATETIME NOT NULL" in ddl
    assert "[UserEmail] NVARCHAR(50) NULL" in ddl
    assert "[GatewayServiceName] NVARCHAR(150) NULL" in ddl
    assert "[PromptTokens] INTEGER NOT NULL" in ddl
    assert "[Id] BIGINT NOT NULL IDENTITY" in ddl
    assert "[Cost] NUMERIC(28, 12) NULL" in ddl  # exact money since schema v5

    rates = str(CreateTable(rate_table).compile(dialect=mssql.dialect()))
    assert "[ModelName] NVARCHAR(100) NOT NULL" in rates
    assert "[PromptTokenRate] NUMERIC(27, 18) NOT NULL" in rates  # FLOAT in the original
    assert "[CompletionTokenRate] NUMERIC(27, 18) NOT NULL" in rates

    # SQL Server 2012+ (Azure SQL): VARBINARY(max), not the deprecated IMAGE. A live connection
    # detects this; offline DDL (the generated T-SQL script) must ask for it.
    modern = mssql.dialect(deprecate_large_types=True)
    dead = str(CreateTable(dead_letter).compile(dialect=modern))
    assert "[RawBody] VARBINARY(max) NOT NULL" in dead
    assert str(CreateTable(token_table).compile(dialect=modern)) == ddl


@pytest.mark.skipif(not hasattr(schema, "ddl"), reason="schema.ddl not available")
def test_generated_tsql_uses_varbinary_max_for_raw_bodies() -> None:
    script = schema.ddl("mssql")
    assert "[RawBody] VARBINARY(max) NOT NULL" in script
    assert " IMAGE" not in script
