"""Migration 0004 — schema v4: ``AoaiUsageDaily``, the daily rollup the reports read.

Creates the table and sums the stored calls into it (:meth:`aoai_helpers.db.rollup.Rollup.rebuild`);
from then on every writer of call rows keeps it in the same transaction. A database that
already has it is left alone (guarded like every step).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from aoai_helpers.db.migrations.steps import MigrationRun, complete_tables
from aoai_helpers.db.rollup import Rollup
from aoai_helpers.db.tables import daily_table, token_table

__all__ = ["DESCRIPTION", "TABLES", "VERSION", "upgrade"]

VERSION: Final = 4
DESCRIPTION: Final = "v4: AoaiUsageDaily (the daily rollup of ApimAoaiToken)"
TABLES: Final = (daily_table,)


def upgrade(conn: Connection, run: MigrationRun) -> list[str]:
    """Create ``AoaiUsageDaily`` where it is missing and fill it from the stored calls."""
    del run  # nothing to carry
    if inspect(conn).has_table(daily_table.name):
        return complete_tables(conn, TABLES)  # only repairs (an index dropped by hand)
    changes = complete_tables(conn, TABLES)
    if inspect(conn).has_table(token_table.name):
        Rollup(conn.dialect).rebuild(conn)
        changes.append(f"built {daily_table.name} from the stored calls")
    return changes
