"""The registry of numbered migrations and the runner that applies the pending ones.

A migration is a module with ``VERSION``, ``DESCRIPTION``, ``TABLES`` and
``upgrade(conn, run) -> list[str]``; :data:`MIGRATIONS` lists them in order. Applied versions
are the rows of ``AoaiSchemaVersion``: the migrations above the highest one are pending.
:func:`apply_pending` checks first (nothing changes if a table cannot be upgraded), applies the
pending ones in order on the caller's connection (one transaction), and records them: one row
per migration applied. Every step being guarded, it runs the applied migrations again too,
which changes nothing unless something was dropped by hand (an index: it is put back). One row
per migration applied, except on a database with no recorded version (new, or the original
project's), which is brought to the head in one step and gets one row, the head version — as
Alembic's ``create_all`` + ``stamp head``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Final

from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from aoai_helpers.clock import utcnow
from aoai_helpers.db.migrations import (
    v0001_original,
    v0002_reconcile,
    v0003_estimate_quality,
    v0004_daily_rollup,
    v0005_money_views,
)
from aoai_helpers.db.migrations.steps import MigrationRun, refuse_behind
from aoai_helpers.db.tables import SCHEMA_TABLES, schema_version

__all__ = ["HEAD", "MIGRATIONS", "MigrationRun", "applied_versions", "apply_pending", "pending"]

#: Every migration, in order (a new one: a module ``vNNNN_name.py`` appended here).
MIGRATIONS: Final[tuple[ModuleType, ...]] = (
    v0001_original,
    v0002_reconcile,
    v0003_estimate_quality,
    v0004_daily_rollup,
    v0005_money_views,
)
#: The schema version this code writes: the last migration's.
HEAD: Final[int] = MIGRATIONS[-1].VERSION


def applied_versions(conn: Connection) -> list[int]:
    """The versions recorded in ``AoaiSchemaVersion`` (none when the table does not exist)."""
    if not inspect(conn).has_table(schema_version.name):
        return []
    return [int(v) for v in conn.execute(select(schema_version.c.Version)).scalars()]


def pending(applied: Sequence[int]) -> list[ModuleType]:
    """The migrations above the highest applied version, in order."""
    top = max(applied, default=0)
    return [m for m in MIGRATIONS if top < m.VERSION]


def apply_pending(
    conn: Connection, *, description: str | None = None, run: MigrationRun | None = None
) -> list[str]:
    """Apply the pending migrations on ``conn`` and record them (module doc); what changed.

    ``description`` goes with each recorded row (how it was applied: ``db upgrade``, …);
    ``run`` carries the original tables ``db upgrade`` migrates. Raises :class:`ConfigError`
    before any change when a table predates the schema and cannot be upgraded here.
    """
    run = run or MigrationRun()
    applied = applied_versions(conn)
    todo = pending(applied)
    migrates_originals = bool(todo) and todo[0] is v0001_original
    skip = [p.model.name for p in run.originals] if migrates_originals else []
    refuse_behind(conn, SCHEMA_TABLES, skip)
    changes: list[str] = []
    for migration in MIGRATIONS:  # the applied ones too: guarded, they only repair
        changes += migration.upgrade(conn, run)
    recorded = todo[-1:] if not applied else todo
    for migration in recorded:
        conn.execute(
            schema_version.insert().values(
                Version=migration.VERSION, AppliedAtUTC=utcnow(), Description=description
            )
        )
        changes.append(f"schema version {migration.VERSION}")
    return changes
