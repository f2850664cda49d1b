"""The database: SQLAlchemy 2 tables (contract §4), engine from a URL, schema init/upgrade.

These models are the source of truth for the schema. The original APIM-AOAI-Proxy tables keep
their names, columns and Azure SQL types (so existing Power BI reports keep working); new
columns sit beside them.

Tables
------
``ApimAoaiToken``     one priced row per call, unique on ``RequestId`` (the idempotency key)
``AoaiTokenRate``     per-token rates with effective dates and currency
``BusinessUnitMap``   APIM subscription → business unit and cost centre
``IngestDeadLetter``  events that could not be ingested: raw body, reason, source, time
``AoaiSchemaVersion`` applied schema versions

Any SQLAlchemy URL works: SQLite (default, a file), PostgreSQL (``postgresql+psycopg://``),
Azure SQL (``mssql+pyodbc://``; the driver is imported only when such a URL is used).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote_plus

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Unicode,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import mssql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.schema import CreateColumn

from aoai_helpers.clock import utcnow
from aoai_helpers.exceptions import ConfigError, DatabaseError

__all__ = [
    "DEFAULT_DB_URL",
    "RECONCILE_COLUMNS",
    "SCHEMA_VERSION",
    "all_tables",
    "bu_map",
    "database_errors",
    "ddl",
    "dead_letter",
    "engine_from_url",
    "init_db",
    "init_schema",
    "masked_url",
    "metadata",
    "rate_table",
    "reconcile_state",
    "require_schema",
    "sqlite_path",
    "token_table",
    "transaction",
    "url_from_odbc",
]

DEFAULT_DB_URL: Final = "sqlite:///data/aoai_usage.db"
SCHEMA_VERSION: Final = 2

# Identity primary keys: BIGINT IDENTITY on SQL Server / PostgreSQL, rowid alias on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
_TinyInt = SmallInteger().with_variant(mssql.TINYINT(), "mssql")

metadata = MetaData()

token_table = Table(
    "ApimAoaiToken",
    metadata,
    Column("Id", _BigId, primary_key=True, autoincrement=True),
    # --- the original columns (names and Azure SQL types unchanged) ---
    Column("ExecTimeUTC", DateTime(), nullable=False),
    Column("ExecDateUTC", DateTime(), nullable=False),
    Column("GatewayRegion", Unicode(100)),
    Column("GatewayServiceName", Unicode(150)),
    Column("SubscriptionId", Unicode(50)),
    Column("SubscriptionName", Unicode(100)),
    Column("UserName", Unicode(50)),
    Column("UserEmail", Unicode(50)),
    Column("ProductName", Unicode(100)),
    Column("ApiName", Unicode(100)),
    Column("OperationId", Unicode(100)),
    Column("ModelName", Unicode(100), comment="normalised model: the pricing key"),
    Column("IsStreaming", _TinyInt, nullable=False),
    Column("PromptTokens", Integer(), nullable=False),
    Column("CompletionTokens", Integer(), nullable=False),
    Column("TotalTokens", Integer(), nullable=False),
    # --- added by apim-aoai-proxy ---
    Column(
        "RequestId",
        Unicode(64),
        nullable=False,
        comment="APIM context.RequestId, or v1: content hash",
    ),
    Column("EventVersion", SmallInteger(), nullable=False),
    Column("Operation", Unicode(16), nullable=False),
    Column("DeploymentName", Unicode(100)),
    Column("ApiVersion", Unicode(40)),
    Column("StatusCode", SmallInteger()),
    Column("ReportedModel", Unicode(100), comment="model as the API reported it"),
    Column("CachedTokens", Integer(), nullable=False, server_default=text("0")),
    Column("ReasoningTokens", Integer(), nullable=False, server_default=text("0")),
    Column(
        "UsageSource",
        Unicode(16),
        nullable=False,
        comment="reported | estimated | prompt_only | unbilled | reconciled",
    ),
    Column("EstimateEncoding", Unicode(20), comment="tokenizer used for an estimate"),
    Column("ModelKnown", _TinyInt, nullable=False, server_default=text("1")),
    Column("Cost", Float(), comment="NULL = unpriced (no rate in effect), never 0"),
    Column("Currency", Unicode(3)),
    Column("RateId", Integer()),
    Column("IngestedAtUTC", DateTime(), nullable=False),
    # --- reconciliation (aoai_helpers.pipeline.reconcile): what a row had before APIM's language-model
    # log gave its exact usage (UsageSource 'reconciled'); NULL on rows never reconciled ---
    Column("PriorUsageSource", Unicode(16)),
    Column("PriorPromptTokens", Integer()),
    Column("PriorCompletionTokens", Integer()),
    Column("PriorTotalTokens", Integer()),
    Column("PriorModelName", Unicode(100)),
    Column("PriorCost", Float()),
    Column("ReconciledAtUTC", DateTime()),
    Index("indx_ExecDate", "ExecDateUTC"),
    Index("indx_ExecTime", "ExecTimeUTC"),
    Index("ux_ApimAoaiToken_RequestId", "RequestId", unique=True),
    Index("ix_ApimAoaiToken_Sub_Time", "SubscriptionId", "ExecTimeUTC"),
    # Covers the monthly reports (aoai_helpers.analysis.report): a month is a range of its leading
    # ExecDateUTC, rows come out grouped by day and subscription (no sort), and no table row
    # is read (1M-row month on SQLite: ~0.4 s instead of ~4 s through indx_ExecDate).
    Index(
        "ix_ApimAoaiToken_Report",
        "ExecDateUTC",
        "SubscriptionId",
        "SubscriptionName",
        "ModelName",
        "DeploymentName",
        "UsageSource",
        "Currency",
        "PromptTokens",
        "CompletionTokens",
        "CachedTokens",
        "TotalTokens",
        "Cost",
    ),
)

rate_table = Table(
    "AoaiTokenRate",
    metadata,
    Column("RateId", Integer(), primary_key=True, autoincrement=True),
    Column("ModelName", Unicode(100), nullable=False),
    Column("PromptTokenRate", Float(), nullable=False),
    Column("CompletionTokenRate", Float(), nullable=False),
    Column("CachedPromptTokenRate", Float()),
    Column("Currency", Unicode(3), nullable=False, server_default=text("'USD'")),
    Column("EffectiveFrom", DateTime(), nullable=False),
    Column("EffectiveTo", DateTime()),
    Column("Source", Unicode(200)),
    Index("ix_AoaiTokenRate_Model_From", "ModelName", "EffectiveFrom", unique=True),
)

bu_map = Table(
    "BusinessUnitMap",
    metadata,
    Column("SubscriptionId", Unicode(50), primary_key=True),
    Column("SubscriptionName", Unicode(100)),
    Column("BusinessUnit", Unicode(100), nullable=False),
    Column("CostCentre", Unicode(50)),
    Column("MonthlyBudget", Float()),
)

dead_letter = Table(
    "IngestDeadLetter",
    metadata,
    Column("Id", _BigId, primary_key=True, autoincrement=True),
    Column("ReceivedAtUTC", DateTime(), nullable=False),
    Column("Source", Unicode(200)),
    Column("Reason", Unicode(400), nullable=False),
    Column("RequestId", Unicode(64)),
    Column("RawSha256", String(64), nullable=False),
    Column("RawBody", LargeBinary(), nullable=False),
    Column("RawSize", Integer(), nullable=False),
    Index("ux_IngestDeadLetter_RawSha256", "RawSha256", unique=True),
)

reconcile_state = Table(
    "ReconcileState",
    metadata,
    Column("Source", Unicode(200), primary_key=True, comment="the language-model log read"),
    Column("WatermarkUTC", DateTime(), nullable=False, comment="end of the last window read"),
    Column("UpdatedAtUTC", DateTime(), nullable=False),
    Column("LastRecords", Integer(), nullable=False, server_default=text("0")),
    Column("LastUpgraded", Integer(), nullable=False, server_default=text("0")),
)

schema_version = Table(
    "AoaiSchemaVersion",
    metadata,
    Column("Version", Integer(), primary_key=True, autoincrement=False),
    Column("AppliedAtUTC", DateTime(), nullable=False),
    Column("Description", Unicode(200), comment="how it was applied (db init, db upgrade, …)"),
)

#: Columns only reconciliation writes (NULL when a row is inserted).
RECONCILE_COLUMNS: Final[tuple[str, ...]] = (
    "PriorUsageSource",
    "PriorPromptTokens",
    "PriorCompletionTokens",
    "PriorTotalTokens",
    "PriorModelName",
    "PriorCost",
    "ReconciledAtUTC",
)

#: Column lengths of the string columns, used to truncate values before insert.
STRING_LIMITS: Final[dict[str, int]] = {
    c.name: c.type.length
    for c in token_table.columns
    if isinstance(c.type, String) and c.type.length
}


def all_tables() -> list[tuple[str, list[Table]]]:
    """Every table the project creates, grouped by who creates it: the store's own (``db
    init``), the issued statements (``report --issue``) and the database checkpoints of
    ``consume`` (``consumer.checkpoint_store: database``)."""
    from aoai_helpers.analysis.statement import statement_metadata
    from aoai_helpers.eventlog.checkpoints import checkpoint_metadata

    return [
        ("", list(metadata.sorted_tables)),
        (
            "Issued chargeback statements (created by report --issue)",
            list(statement_metadata.sorted_tables),
        ),
        (
            "Event Hubs checkpoints of consume (created when consumer.checkpoint_store is database)",
            list(checkpoint_metadata.sorted_tables),
        ),
    ]


def ddl(dialect_name: str = "mssql") -> str:
    """The schema as SQL for a dialect (``mssql`` → ``sql/aoaieventdb.sql``, T-SQL with GO)."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    drivers = {
        "mssql": "mssql+pyodbc://",
        "postgresql": "postgresql+psycopg://",
        "sqlite": "sqlite://",
    }
    if dialect_name not in drivers:
        raise ConfigError(f"unknown dialect {dialect_name!r} (one of {', '.join(drivers)})")
    dialect_cls = make_url(drivers[dialect_name]).get_dialect()  # compiling needs no driver
    # Azure SQL: VARBINARY(max)/NVARCHAR(max), as a live connection to a current server gets.
    options: dict[str, Any] = {"deprecate_large_types": True} if dialect_name == "mssql" else {}
    dialect = dialect_cls(**options)
    sep = "\nGO\n\n" if dialect_name == "mssql" else ";\n\n"
    parts = []
    for heading, tables in all_tables():
        for i, table in enumerate(tables):
            lead = f"-- {heading}\n" if heading and i == 0 else ""
            parts.append(lead + str(CreateTable(table).compile(dialect=dialect)).strip())
            parts.extend(
                str(CreateIndex(ix).compile(dialect=dialect)).strip()
                for ix in sorted(table.indexes, key=lambda i: i.name or "")
            )
    header = (
        f"-- apim-aoai-proxy schema v{SCHEMA_VERSION} ({dialect_name}), generated from aoai_helpers.db.store.\n"
        "-- Regenerate with: python -m aoai_helpers db ddl --dialect " + dialect_name + "\n\n"
    )
    body = "\n".join(line.rstrip() for line in (sep.join(parts) + sep.rstrip()).splitlines())
    return header + body + "\n"


def url_from_odbc(connection_string: str) -> str:
    """A SQLAlchemy URL for an ODBC connection string (the original ``AOAI_DB_STORE_CONNECTION``)."""
    return "mssql+pyodbc:///?odbc_connect=" + quote_plus(connection_string)


_ODBC_SECRET = re.compile(r"(?i)((?:pwd|password)(?:=|%3D))(.*?)(;|%3B|&|$)")


def masked_url(url: str) -> str:
    """The URL with its password — also one inside ``odbc_connect=`` — replaced by ``***``."""
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"
    return _ODBC_SECRET.sub(r"\1***\3", rendered)


def normalize_url(url: str | os.PathLike[str] | None) -> str:
    """Accept a SQLAlchemy URL, a bare file path (SQLite) or None (the default file)."""
    if url is None or str(url).strip() == "":
        return DEFAULT_DB_URL
    s = str(url).strip()
    if "://" not in s:
        return "sqlite:///" + s
    return s


def _parse(url: str | os.PathLike[str] | None) -> URL:
    s = normalize_url(url)
    try:
        return make_url(s)
    except ArgumentError:
        raise ConfigError(f"not a database URL: {masked_url(s)}") from None


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory and ``file:`` URIs)."""
    db = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or not db
        or db == ":memory:"
        or db.startswith("file:")
    ):
        return None
    return Path(db).expanduser()


def sqlite_path(url: str | os.PathLike[str] | None) -> Path | None:
    """The file of a SQLite URL or path (None for other databases and in-memory SQLite)."""
    return _sqlite_file(_parse(url))


def engine_from_url(url: str | os.PathLike[str] | None = None) -> Engine:
    """An engine for ``url`` (SQLite file by default), with SQLite tuned for ingest.

    Raises :class:`ConfigError` for a malformed URL or a missing driver.
    """
    parsed = _parse(url)
    kwargs: dict[str, Any] = {}
    file = _sqlite_file(parsed)
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder for the SQLite file {file}: {exc.strerror or exc}"
            ) from None
    if parsed.get_backend_name() != "sqlite":
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        hint = ""
        if parsed.get_backend_name() == "mssql":
            hint = " — install the extra: pip install 'apim-aoai-proxy[mssql]' and the Microsoft ODBC driver (or FreeTDS)"
        elif parsed.get_backend_name() == "postgresql":
            hint = " — install the extra: pip install 'apim-aoai-proxy[postgres]'"
        raise ConfigError(f"no driver for {parsed.drivername}: {exc}{hint}") from None
    if parsed.drivername == "mssql+pyodbc":
        _check_odbc_driver(parsed, engine.dialect.dbapi)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_ODBC_DRIVER = re.compile(r"(?i)(?:^|;)\s*driver\s*=\s*(\{[^}]*\}|[^;]*)")


def _check_odbc_driver(parsed: URL, dbapi: Any) -> None:
    """A ConfigError now, rather than a driver-manager error at the first query, when the URL
    names an ODBC driver that is not installed (``pyodbc.drivers()`` lists those that are)."""
    named = parsed.query.get("driver")
    odbc = parsed.query.get("odbc_connect")
    if not named and isinstance(odbc, str):
        found = _ODBC_DRIVER.search(odbc)
        named = found.group(1).strip().strip("{}") if found else None
    drivers = getattr(dbapi, "drivers", None)
    if not isinstance(named, str) or not named or drivers is None:
        return  # a DSN, or a pyodbc that cannot list drivers: the driver manager decides
    installed = list(drivers())
    if named not in installed:
        raise ConfigError(
            f"ODBC driver {named!r} is not installed (installed: {', '.join(installed) or 'none'})"
            " — install the Microsoft ODBC driver (msodbcsql18) or FreeTDS, or name an installed"
            " one with ?driver=…"
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: keeps the RequestId index hot during ingest
    cur.close()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction; database failures surface as :class:`DatabaseError` (URL masked)."""
    with database_errors(engine), engine.begin() as conn:
        yield conn


@contextmanager
def database_errors(engine: Engine) -> Iterator[None]:
    """Turn SQLAlchemy/driver exceptions into one-line :class:`DatabaseError` (URL masked)."""
    try:
        yield
    except OperationalError as exc:
        raise DatabaseError(
            f"database unreachable or busy ({masked_url(str(engine.url))}): {_first_line(exc.orig)}"
        ) from exc
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database error: {_first_line(getattr(exc, 'orig', exc))}") from exc


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def require_schema(url: str) -> Engine:
    """An engine for an existing database that has this project's tables, else a ConfigError.

    For read-only commands: a mistyped SQLite path must not silently create an empty file.
    """
    parsed = _parse(url)
    hint = "run `python -m aoai_helpers db init` (or ingest some events) first"
    file = _sqlite_file(parsed)
    if file is not None and not file.is_file():
        raise ConfigError(f"no database file at {parsed.database}: {hint}")
    engine = engine_from_url(parsed.render_as_string(hide_password=False))
    with transaction(engine) as conn:
        insp = inspect(conn)
        tables = set(insp.get_table_names())
        original = token_table.name in tables and "requestid" not in {
            c["name"].lower() for c in insp.get_columns(token_table.name)
        }
    if original:
        raise ConfigError(
            f"{masked_url(str(engine.url))} has the original APIM-AOAI-Proxy schema: run "
            "`python -m aoai_helpers db upgrade` first (it migrates it in place)"
        )
    missing = sorted(t.name for t in metadata.sorted_tables if t.name not in tables)
    if missing:
        raise ConfigError(
            f"{masked_url(str(engine.url))} lacks table(s) {', '.join(missing)}: {hint}"
        )
    return engine


#: Tables whose rows ``db upgrade`` can fill in when they lack required columns (migrate.py).
UPGRADABLE: Final = ("ApimAoaiToken", "AoaiTokenRate")


def init_db(engine: Engine) -> list[str]:
    """Create missing tables and add missing nullable/defaulted columns; return what changed.

    A table that lacks a NOT NULL column with no default (e.g. the original ``ApimAoaiToken``
    without ``RequestId``) cannot be upgraded here: a :class:`ConfigError` says to run
    ``db upgrade`` (:mod:`aoai_helpers.db.migrate`), which migrates it in place.
    """
    with transaction(engine) as conn:
        return init_schema(conn)


def init_schema(conn: Connection, *, description: str | None = None) -> list[str]:
    """:func:`init_db` inside the caller's transaction; ``description`` goes with a new version row."""
    changes: list[str] = []
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    columns = {t: {c["name"].lower() for c in insp.get_columns(t)} for t in existing}
    # Check everything first: SQLite commits DDL as it goes (outside db upgrade's explicit
    # transaction), so a late refusal would leave a half-upgraded database behind.
    behind: dict[str, list[str]] = {}
    for table in metadata.sorted_tables:
        required = [
            col.name
            for col in (table.columns if table.name in existing else ())
            if col.name.lower() not in columns[table.name]
            and not col.nullable
            and col.server_default is None
        ]
        if required:
            behind[table.name] = required
    if behind:
        what = "; ".join(
            f"table {name} predates this schema (no {', '.join(cols)})"
            for name, cols in behind.items()
        )
        if set(behind) <= set(UPGRADABLE):
            raise ConfigError(
                f"{what}: it looks like the original APIM-AOAI-Proxy schema; run "
                "`python -m aoai_helpers db upgrade` (the migration from the original "
                "schema: in place, every row kept)"
            )
        raise ConfigError(f"{what}: it cannot be upgraded in place")
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(conn)
            changes.append(f"created table {table.name}")
            continue
        for col in table.columns:
            if col.name.lower() in columns[table.name]:
                continue
            ddl = CreateColumn(col).compile(dialect=conn.dialect)
            quoted = conn.dialect.identifier_preparer.quote(table.name)
            conn.execute(text(f"ALTER TABLE {quoted} ADD {ddl}"))
            changes.append(f"added column {table.name}.{col.name}")
    for index in (ix for t in metadata.sorted_tables for ix in t.indexes):
        table_name = index.table.name if index.table is not None else ""
        if table_name in existing and index.name not in {
            ix["name"] for ix in insp.get_indexes(table_name)
        }:
            index.create(conn)
            changes.append(f"created index {index.name}")
    applied = conn.execute(select(schema_version.c.Version)).scalars().all()
    if SCHEMA_VERSION not in applied:
        conn.execute(
            schema_version.insert().values(
                Version=SCHEMA_VERSION, AppliedAtUTC=utcnow(), Description=description
            )
        )
        changes.append(f"schema version {SCHEMA_VERSION}")
    return changes
