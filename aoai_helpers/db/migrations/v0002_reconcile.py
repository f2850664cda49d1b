"""Migration 0002 — schema v2: reconciliation with APIM's language-model log.

Adds the ``Prior*`` / ``ReconciledAtUTC`` columns of ``ApimAoaiToken`` (what a row had before
its exact usage arrived; NULL on rows never reconciled) and the ``ReconcileState`` watermark
table (:mod:`aoai_helpers.pipeline.reconcile`). Nullable columns and a new table: nothing to
fill, so a v1 database upgrades in place with ``db init`` as well as ``db upgrade``.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Column
from sqlalchemy.engine import Connection

from aoai_helpers.db.migrations.steps import MigrationRun, complete_tables
from aoai_helpers.db.tables import RECONCILE_COLUMNS, reconcile_state, token_table

__all__ = ["DESCRIPTION", "TABLES", "VERSION", "upgrade"]

VERSION: Final = 2
DESCRIPTION: Final = "v2: reconciliation columns (Prior*, ReconciledAtUTC) and ReconcileState"
TABLES: Final = (token_table, reconcile_state)


def _owns(col: Column[Any]) -> bool:
    return col.table is not token_table or col.name in RECONCILE_COLUMNS


def upgrade(conn: Connection, run: MigrationRun) -> list[str]:
    """Add the reconciliation columns and create ``ReconcileState`` where they are missing."""
    del run  # nothing to carry
    return complete_tables(conn, TABLES, _owns)
