"""The schema's life cycle: create or upgrade it (:func:`init_db`, through the numbered
migrations of :mod:`aoai_helpers.db.migrations`), check it before reading
(:func:`require_schema`), print it as SQL (:func:`ddl`)."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from aoai_helpers.db.engine import engine_from_url, masked_url, parse_url, sqlite_file, transaction
from aoai_helpers.db.migrations.runner import HEAD, MigrationRun, apply_pending
from aoai_helpers.db.migrations.steps import UPGRADABLE
from aoai_helpers.db.tables import SCHEMA_TABLES, all_tables, token_table
from aoai_helpers.db.views import VIEWS, create_view_statements
from aoai_helpers.exceptions import ConfigError

__all__ = ["SCHEMA_VERSION", "UPGRADABLE", "ddl", "init_db", "init_schema", "require_schema"]

#: The version this code writes: the last migration's.
SCHEMA_VERSION: Final = HEAD


def ddl(dialect_name: str = "mssql") -> str:
    """The schema as SQL for a dialect (``mssql`` → ``sql/aoaieventdb.sql``, T-SQL with GO):
    the tables ``db init`` creates, the views for Power BI (:mod:`aoai_helpers.db.views`), then
    the tables created when first needed, each group under its heading."""
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
        if not heading:  # the views read the schema proper: right after it
            for i, view in enumerate(VIEWS):
                lead = "-- Views for Power BI and other SQL readers (db init)\n" if i == 0 else ""
                statements = create_view_statements(view, dialect)
                parts += [lead + statements[0], *statements[1:]]
    header = (
        f"-- apim-aoai-proxy schema v{SCHEMA_VERSION} ({dialect_name}), generated from aoai_helpers.db.tables.\n"
        "-- Regenerate with: python -m aoai_helpers db ddl --dialect " + dialect_name + "\n\n"
    )
    body = "\n".join(line.rstrip() for line in (sep.join(parts) + sep.rstrip()).splitlines())
    return header + body + "\n"


def require_schema(url: str) -> Engine:
    """An engine for an existing database that has this project's tables, else a ConfigError.

    For read-only commands: a mistyped SQLite path must not silently create an empty file.
    """
    parsed = parse_url(url)
    hint = "run `python -m aoai_helpers db init` (or ingest some events) first"
    file = sqlite_file(parsed)
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
    missing = sorted(t.name for t in SCHEMA_TABLES if t.name not in tables)
    if missing:
        raise ConfigError(
            f"{masked_url(str(engine.url))} lacks table(s) {', '.join(missing)}: {hint}"
        )
    return engine


def init_db(engine: Engine) -> list[str]:
    """Apply the pending migrations (create the schema on a new database); what changed.

    A table that lacks a NOT NULL column with no default (e.g. the original ``ApimAoaiToken``
    without ``RequestId``) cannot be upgraded here: a :class:`ConfigError` says to run
    ``db upgrade`` (:mod:`aoai_helpers.pipeline.upgrade`), which migrates it in place.
    """
    with transaction(engine) as conn:
        return init_schema(conn)


def init_schema(
    conn: Connection, *, description: str | None = None, run: MigrationRun | None = None
) -> list[str]:
    """:func:`init_db` inside the caller's transaction; ``description`` goes with each recorded
    version, ``run`` carries ``db upgrade``'s original tables (:func:`.apply_pending`)."""
    return apply_pending(conn, description=description, run=run)
