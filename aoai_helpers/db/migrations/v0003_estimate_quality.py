"""Migration 0003 — schema v3: ``EstimateQuality``, how sure an estimated row is.

Adds the nullable ``ApimAoaiToken.EstimateQuality`` column (``exact`` | ``approximate`` |
``lower_bound``; NULL on rows whose usage the API reported, and on rows stored before it
existed). Nothing to fill: a v2 database upgrades in place with ``db init`` or ``db upgrade``.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Column
from sqlalchemy.engine import Connection

from aoai_helpers.db.migrations.steps import MigrationRun, complete_tables
from aoai_helpers.db.tables import token_table

__all__ = ["DESCRIPTION", "TABLES", "VERSION", "upgrade"]

VERSION: Final = 3
DESCRIPTION: Final = "v3: EstimateQuality (exact | approximate | lower_bound)"
TABLES: Final = (token_table,)


def _owns(col: Column[Any]) -> bool:
    return col.name == "EstimateQuality"


def upgrade(conn: Connection, run: MigrationRun) -> list[str]:
    """Add ``EstimateQuality`` where it is missing."""
    del run  # nothing to carry
    return complete_tables(conn, TABLES, _owns)
