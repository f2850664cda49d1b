"""``db upgrade``: turn a database of the original APIM-AOAI-Proxy into this schema, in place.

The original project's ``aoaieventdb.sql`` created two tables: ``ApimAoaiToken`` (16 columns,
no key) and ``AoaiTokenRate`` (model, prompt and completion rate). :func:`upgrade` keeps every
row and every original column as it is (existing Power BI reports keep working) and adds what
this schema has beside them, in one transaction where the database has transactional DDL
(SQLite, PostgreSQL, SQL Server):

``ApimAoaiToken``
    new columns are added — those the schema wants NOT NULL first as nullable, then filled,
    then made NOT NULL — and the rows that predate the schema get:

    - ``Id``: an identity key (SQL Server, PostgreSQL) or SQLite's rowid;
    - ``RequestId`` = ``legacy:`` + the first 32 hex digits of the SHA-256 of the row's original
      columns + ``:`` + its ``Id`` (see :func:`legacy_request_id`). The hash ties the id to the
      content (an edited row no longer matches it); the ``Id`` keeps identical rows — the
      original had no key, so two calls with the same values are two rows — distinct;
    - ``EventVersion`` 1, ``Operation`` from the original ``OperationId``
      (:data:`~aoai_helpers.core.events.V1_OPERATION_IDS`, else ``other``);
    - ``UsageSource`` ``estimated`` where ``IsStreaming`` = 1 (the original function counted
      streams with tiktoken), ``reported`` otherwise;
    - ``ModelKnown`` from :func:`~aoai_helpers.core.model_names.normalize_model` (``ModelName`` itself is
      not changed: it stays the pricing key those rows had), ``IngestedAtUTC`` the upgrade time.

``AoaiTokenRate``
    every original rate gets ``CachedPromptTokenRate`` = its prompt rate, ``Currency`` USD,
    ``EffectiveFrom`` 2000-01-01 (:data:`~aoai_helpers.core.pricing.EPOCH`: this schema's "always"),
    ``EffectiveTo`` NULL (open) and ``Source`` ``original AoaiTokenRate``. The original allowed
    several rows per model; this schema does not (one rate per model and start), so such a
    table is refused, before any change, with the models to fix.

Then the tables the original did not have are created, the indexes (the unique one on
``RequestId`` among them), the applied migration is recorded in ``AoaiSchemaVersion``, and the
upgraded calls are repriced (:func:`~aoai_helpers.pipeline.reprice.reprice`): ``Cost`` is filled for
every call whose model has a rate, and stays NULL (unpriced) for the others.

SQLite can neither add a primary key nor make a column NOT NULL: there, after the columns were
added and filled, the table is rebuilt (created anew with the schema, rows copied with
``Id`` = rowid, the old one dropped, the new one renamed — SQLite's documented procedure).

Running it again changes nothing. ``sql/migrate_from_original.sql``
(:func:`aoai_helpers.db.migrate_tsql.migration_tsql`) is the same migration as a T-SQL script for
Azure SQL DBAs, generated from the same models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.clock import utcnow
from aoai_helpers.core.pricing import EPOCH, default_rates
from aoai_helpers.db.engine import database_errors, masked_url, transaction
from aoai_helpers.db.migrations.original import (
    _UPGRADE_NOTE,
    LEGACY_PREFIX,
    ORIGINAL_RATE_COLUMNS,
    ORIGINAL_RATE_SOURCE,
    ORIGINAL_TOKEN_COLUMNS,
    TableUpgrade,
    legacy_request_id,
    migrate_original,
    plan_original,
)
from aoai_helpers.db.migrations.runner import MigrationRun
from aoai_helpers.db.rates import store_rates
from aoai_helpers.db.schema import SCHEMA_VERSION, init_schema
from aoai_helpers.db.tables import rate_table, token_table
from aoai_helpers.pipeline.reprice import reprice

__all__ = [
    "LEGACY_PREFIX",
    "ORIGINAL_RATE_COLUMNS",
    "ORIGINAL_RATE_SOURCE",
    "ORIGINAL_TOKEN_COLUMNS",
    "TableUpgrade",
    "UpgradeResult",
    "legacy_request_id",
    "upgrade",
]

# --- results ----------------------------------------------------------------------------------


@dataclass(slots=True)
class UpgradeResult:
    """What :func:`upgrade` did (nothing when the database was up to date)."""

    database: str
    tables: list[TableUpgrade] = field(default_factory=list)
    schema_changes: list[str] = field(default_factory=list)
    repriced: int = 0
    priced: int = 0
    unpriced_models: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """True when there was nothing to do."""
        return not self.tables and not self.schema_changes

    def lines(self) -> list[str]:
        """The report the CLI prints, one line per step."""
        if self.up_to_date:
            return [
                f"database {self.database}: already up to date (schema version {SCHEMA_VERSION})"
            ]
        head = "upgraded from the original APIM-AOAI-Proxy schema" if self.tables else "upgraded"
        out = [f"database {self.database}: {head}"]
        for t in self.tables:
            added = f"{len(t.columns_added)} column(s) added ({', '.join(t.columns_added)})"
            if t.table == token_table.name:
                sources = ", ".join(f"{n} {s}" for s, n in sorted(t.usage_sources.items()))
                filled = (
                    f"{t.rows} row(s) backfilled (RequestId legacy:…, EventVersion 1, Operation, "
                    f"UsageSource: {sources or 'none'})"
                )
            else:
                filled = (
                    f"{t.rows} rate(s) backfilled (cached = prompt rate, USD, from "
                    f"{EPOCH:%Y-%m-%d}, open-ended, source {ORIGINAL_RATE_SOURCE!r})"
                )
            rebuilt = "; table rebuilt (SQLite)" if t.rebuilt else ""
            out.append(f"{t.table}: {added}; {filled}{rebuilt}")
        created = [c for c in self.schema_changes if not c.startswith("schema version")]
        if created:
            out.append("; ".join(created))
        if self.tables or self.repriced:
            unpriced = self.repriced - self.priced
            line = f"{self.repriced} call(s) repriced: {self.priced} priced, {unpriced} unpriced"
            if self.unpriced_models:
                line += f" (no rate for: {', '.join(self.unpriced_models)})"
            out.append(line)
        if any(c.startswith("schema version") for c in self.schema_changes):
            out.append(f"schema version {SCHEMA_VERSION} recorded")
        return out


# --- the upgrade ------------------------------------------------------------------------------


@contextmanager
def _one_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction, DDL included (as :func:`~aoai_helpers.db.engine.transaction` for errors).

    Python's sqlite3 opens transactions only before INSERT/UPDATE/DELETE and runs DDL outside
    them; here the connection is switched to explicit control and ``BEGIN IMMEDIATE`` (the
    write lock, waiting up to the busy timeout) opens a transaction that holds the DDL too.
    """
    if engine.dialect.name != "sqlite":
        with transaction(engine) as conn:
            yield conn
        return
    with database_errors(engine), engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        saved = getattr(dbapi, "isolation_level", "")
        dbapi.isolation_level = None  # type: ignore[union-attr]
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()
            dbapi.isolation_level = saved  # type: ignore[union-attr]


def upgrade(engine: Engine, *, seed_default_rates: bool = True) -> UpgradeResult:
    """Upgrade the database to this schema, in place and in one transaction (module doc).

    Creates the schema where there is none (as ``db init``, seeding the default rates into a new
    rate table unless ``seed_default_rates`` is false), completes an older one, and migrates
    the original APIM-AOAI-Proxy tables. Raises :class:`ConfigError` (nothing changed) for a
    table it cannot migrate, :class:`DatabaseError` when the database fails.
    """
    result = UpgradeResult(masked_url(str(engine.url)))
    with _one_transaction(engine) as conn:
        plans = plan_original(conn)
        run = MigrationRun(
            originals=plans,
            migrate_originals=lambda c: migrate_original(c, plans, utcnow()),
        )
        result.schema_changes = init_schema(
            conn,
            description=f"{_UPGRADE_NOTE} (db upgrade)" if plans else "db upgrade",
            run=run,
        )
        result.tables = run.tables
        seeded = False
        if seed_default_rates and f"created table {rate_table.name}" in result.schema_changes:
            defaults = default_rates()
            store_rates(conn, defaults)
            result.schema_changes.append(f"seeded {len(defaults)} default rates")
            seeded = True
        if plans or seeded:
            result.repriced = reprice(conn)
            _pricing_stats(conn, result)
    return result


def _pricing_stats(conn: Connection, result: UpgradeResult) -> None:
    t = token_table.c
    billed = t.UsageSource != "unbilled"
    result.priced = int(
        conn.execute(select(func.count()).where(billed, t.Cost.is_not(None))).scalar() or 0
    )
    models = conn.execute(
        select(t.ModelName).where(billed, t.Cost.is_(None)).distinct().order_by(t.ModelName)
    ).scalars()
    names = [m if m is not None else "(none)" for m in models]
    result.unpriced_models = names[:10] + ([f"… {len(names) - 10} more"] if len(names) > 10 else [])
