"""Migration 0001 — schema v1: the original APIM-AOAI-Proxy schema, completed in place.

On an empty database it creates the v1 tables. On the original project's two tables
(``db upgrade`` only: ``db init`` refuses them) it first migrates them in place, every row kept
(:mod:`aoai_helpers.db.migrations.original`), then adds what v1 has beside them. The T-SQL
for DBAs is ``sql/migrate_from_original.sql`` (:mod:`aoai_helpers.db.migrate_tsql`).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Column
from sqlalchemy.engine import Connection

from aoai_helpers.db.migrations.steps import MigrationRun, complete_tables
from aoai_helpers.db.tables import RECONCILE_COLUMNS, SCHEMA_TABLES, daily_table, reconcile_state

__all__ = ["DESCRIPTION", "TABLES", "VERSION", "upgrade"]

VERSION: Final = 1
DESCRIPTION: Final = "v1: the original APIM-AOAI-Proxy tables completed, dead letters, BU map"
#: The tables of v1 (every schema table but those a later migration adds).
TABLES: Final = tuple(t for t in SCHEMA_TABLES if t not in (reconcile_state, daily_table))


def _owns(col: Column[Any]) -> bool:
    return col.name not in RECONCILE_COLUMNS  # migration 0002's


def upgrade(conn: Connection, run: MigrationRun) -> list[str]:
    """Migrate the original tables found (``run.originals``), then complete the v1 tables."""
    if run.originals:
        run.tables.extend(run.migrate_originals(conn))
    return complete_tables(conn, TABLES, _owns)
