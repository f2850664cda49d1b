"""Guarded schema steps the migrations are made of: each does only what the database lacks.

Like the T-SQL script's ``IF OBJECT_ID … IS NULL`` / ``IF COL_LENGTH … IS NULL`` guards, every
step looks first, so a migration applied to a database that already has its tables, columns
or indexes changes nothing there, and each returns the changes it made, one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Column, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from aoai_helpers.db.migrations.original import OriginalTable, TableUpgrade, required
from aoai_helpers.exceptions import ConfigError

__all__ = ["UPGRADABLE", "MigrationRun", "complete_tables", "refuse_behind"]

#: Tables whose rows ``db upgrade`` can fill in when they lack required columns (migration 0001).
UPGRADABLE: Final = ("ApimAoaiToken", "AoaiTokenRate")


@dataclass(slots=True)
class MigrationRun:
    """What one run of the migrations carries: the original tables ``db upgrade`` found and
    migrates (:func:`~aoai_helpers.db.migrations.original.plan_original`), and what was done."""

    originals: Sequence[OriginalTable] = ()
    migrate_originals: Callable[[Connection], list[TableUpgrade]] = lambda _conn: []
    tables: list[TableUpgrade] = field(default_factory=list)


def refuse_behind(conn: Connection, tables: Sequence[Table], skip: Sequence[str] = ()) -> None:
    """A :class:`ConfigError`, before any change, when an existing table lacks a column that
    cannot be added (NOT NULL, no default) — ``skip`` names tables migration 0001 migrates.

    SQLite commits DDL as it goes (outside db upgrade's explicit transaction), so a late
    refusal would leave a half-upgraded database behind: everything is checked first.
    """
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    behind: dict[str, list[str]] = {}
    for table in tables:
        if table.name not in existing or table.name in skip:
            continue
        have = {c["name"].lower() for c in insp.get_columns(table.name)}
        cols = [c.name for c in table.columns if c.name.lower() not in have and required(c)]
        if cols:
            behind[table.name] = cols
    if not behind:
        return
    what = "; ".join(
        f"table {name} predates this schema (no {', '.join(cols)})" for name, cols in behind.items()
    )
    if set(behind) <= set(UPGRADABLE):
        raise ConfigError(
            f"{what}: it looks like the original APIM-AOAI-Proxy schema; run "
            "`python -m aoai_helpers db upgrade` (the migration from the original "
            "schema: in place, every row kept)"
        )
    raise ConfigError(f"{what}: it cannot be upgraded in place")


def complete_tables(
    conn: Connection,
    tables: Sequence[Table],
    owns: Callable[[Column[Any]], bool] = lambda _col: True,
) -> list[str]:
    """Create the missing ``tables``; add the columns ``owns`` selects that existing ones lack;
    create their missing indexes. What changed, one line each."""
    changes: list[str] = []
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    for table in tables:
        if table.name not in existing:
            table.create(conn)
            changes.append(f"created table {table.name}")
            continue
        have = {c["name"].lower() for c in insp.get_columns(table.name)}
        quoted = conn.dialect.identifier_preparer.quote(table.name)
        for col in table.columns:
            if col.name.lower() in have or not owns(col):
                continue
            ddl = CreateColumn(col).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {quoted} ADD {ddl}"))
            changes.append(f"added column {table.name}.{col.name}")
    for table in tables:
        if table.name not in existing:
            continue  # created with its indexes
        names = {ix["name"] for ix in insp.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in names:
                index.create(conn)
                changes.append(f"created index {index.name}")
    return changes
