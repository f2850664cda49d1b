"""Migration 0005 — schema v5: exact money columns, and the views for Power BI.

Money: the money columns (:data:`~aoai_helpers.db.tables.MONEY_COLUMNS`: costs, rates, budgets,
statement and invoice amounts) become exact ``NUMERIC(p, s)`` on PostgreSQL and SQL Server
(the precisions and why: :mod:`aoai_helpers.db.tables`, "Money columns"). SQLite has no
decimal type and keeps ``REAL``: nothing to do there. Names, order and nullability stay, so
readers of the original tables (Power BI reports) keep working; Python reads floats as before.

* PostgreSQL: ``ALTER TABLE … ALTER COLUMN … TYPE NUMERIC(p, s)`` (a double converts to
  ``numeric`` by assignment; the indexes are rebuilt by the statement). PostgreSQL refuses to
  change the type of a column a view reads: this project's views are dropped first and
  created again below; a table that one of the DBA's own views reads keeps its type, and the
  change line says so (drop the view, run ``db upgrade``, create it again).
* SQL Server: ``ALTER TABLE … ALTER COLUMN … NUMERIC(p, s) [NOT] NULL`` (the nullability is
  restated: without it the column would become nullable). A column used in an index cannot
  be altered — "The modified column can't be … used in an index, unless the column is a
  varchar, nvarchar, or varbinary data type …"
  (https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-table-transact-sql) — so
  each of this schema's indexes that holds the column (``ix_ApimAoaiToken_Report`` holds
  ``Cost``) is dropped before and created again after. The same T-SQL blocks
  (:func:`money_tsql_blocks`) are step 4b of ``sql/migrate_from_original.sql``. Converting a
  large table rewrites every row: plan it for a quiet hour.

Views: :mod:`aoai_helpers.db.views`, created — replaced where they exist, so this definition
lands — when this migration is pending; once it is recorded, only missing ones are created
(``db init`` runs every migration's guarded steps each time).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Column, Numeric, inspect, select, text
from sqlalchemy.engine import Connection, Dialect

from aoai_helpers.db.migrations.steps import MigrationRun
from aoai_helpers.db.tables import MONEY_COLUMNS, metadata, schema_version
from aoai_helpers.db.views import VIEWS, drop_views, ensure_views

__all__ = ["DESCRIPTION", "TABLES", "VERSION", "money_tsql_blocks", "upgrade"]

VERSION: Final = 5
DESCRIPTION: Final = (
    "v5: exact money columns (NUMERIC on SQL Server and PostgreSQL) and the chargeback views"
)
#: The tables whose columns it changes (those of them that exist).
TABLES: Final = tuple(dict.fromkeys(metadata.tables[t] for t, _c in MONEY_COLUMNS))


def _exact(col: Column[Any], dialect: Dialect) -> tuple[int, int]:
    """The (precision, scale) a money column has on ``dialect``."""
    impl = col.type.dialect_impl(dialect)
    assert isinstance(impl, Numeric) and impl.precision is not None and impl.scale is not None
    return impl.precision, impl.scale


def _numeric(col: Column[Any], dialect: Dialect) -> str:
    precision, scale = _exact(col, dialect)
    return f"NUMERIC({precision}, {scale})"


def _inexact(conn: Connection) -> dict[str, list[Column[Any]]]:
    """Per existing table, its money columns whose type is not yet the exact one."""
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    out: dict[str, list[Column[Any]]] = {}
    for table_name, column_name in MONEY_COLUMNS:
        if table_name not in existing:
            continue
        have = {c["name"].lower(): c["type"] for c in insp.get_columns(table_name)}
        kind = have.get(column_name.lower())
        if kind is None:
            continue
        col = metadata.tables[table_name].c[column_name]
        precision, scale = _exact(col, conn.dialect)
        # a reflected FLOAT / DOUBLE PRECISION is a Numeric subclass too: it has no scale
        if isinstance(kind, Numeric) and (kind.precision, kind.scale) == (precision, scale):
            continue
        out.setdefault(table_name, []).append(col)
    return out


_PG_READERS: Final = text(
    "SELECT DISTINCT v.relname FROM pg_depend d"
    " JOIN pg_rewrite r ON r.oid = d.objid"
    " JOIN pg_class v ON v.oid = r.ev_class"
    " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
    " WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = to_regclass(:tbl)"
    " AND v.oid <> d.refobjid AND a.attname = ANY(:cols) ORDER BY 1"
)


_PG_VIEW_READERS: Final = text(
    "SELECT DISTINCT v.relname FROM pg_depend d"
    " JOIN pg_rewrite r ON r.oid = d.objid"
    " JOIN pg_class v ON v.oid = r.ev_class"
    " WHERE d.classid = 'pg_rewrite'::regclass AND v.oid <> d.refobjid"
    " AND d.refobjid IN (SELECT to_regclass(n) FROM unnest(CAST(:views AS text[])) AS n)"
    " ORDER BY 1"
)


def _pg_alterable(
    conn: Connection, todo: dict[str, list[Column[Any]]]
) -> tuple[dict[str, list[Column[Any]]], list[str]]:
    """The tables whose money columns PostgreSQL can alter now, and a line for each kept inexact:
    a view of the DBA's reads the column (``ALTER … TYPE`` refuses), or reads one of our views
    (which must be dropped around the change, and ``DROP VIEW`` refuses)."""
    q = conn.dialect.identifier_preparer
    ours = {v.name for v in VIEWS}
    on_ours = [
        r for r in conn.execute(_PG_VIEW_READERS, {"views": [q.quote(v) for v in sorted(ours)]})
        .scalars() if r not in ours
    ]  # fmt: skip
    alterable: dict[str, list[Column[Any]]] = {}
    kept: list[str] = []
    for table_name, cols in todo.items():
        readers = conn.execute(
            _PG_READERS, {"tbl": q.quote(table_name), "cols": [c.name for c in cols]}
        ).scalars()
        others = [r for r in readers if r not in ours] + on_ours
        names = ", ".join(c.name for c in cols)
        if others:
            kept.append(
                f"kept {table_name} ({names}) inexact: view(s) {', '.join(sorted(set(others)))}"
                " read it or the views — drop them, run db upgrade, create them again"
            )
        else:
            alterable[table_name] = cols
    return alterable, kept


def _postgresql(conn: Connection, todo: dict[str, list[Column[Any]]]) -> list[str]:
    q = conn.dialect.identifier_preparer
    changes: list[str] = []
    for table_name, cols in todo.items():
        alters = ", ".join(
            f"ALTER COLUMN {q.quote(c.name)} TYPE {_numeric(c, conn.dialect)}" for c in cols
        )
        conn.exec_driver_sql(f"ALTER TABLE {q.quote(table_name)} {alters}")
        changes.append(f"made {table_name} ({', '.join(c.name for c in cols)}) exact: NUMERIC")
    return changes


def money_tsql_blocks(dialect: Dialect, columns: list[Column[Any]] | None = None) -> list[str]:
    """Guarded T-SQL per money column (all of them unless ``columns``): when the column is
    not yet ``NUMERIC(p, s)``, drop this schema's indexes that hold it, then alter it (one
    ``IF … statement;`` each, no ``BEGIN … END``). The indexes are created again afterwards (the script's step 5; :func:`upgrade`)."""
    q = dialect.identifier_preparer
    cols = columns or [metadata.tables[t].c[c] for t, c in MONEY_COLUMNS]
    blocks = []
    for col in cols:
        table = col.table
        precision, scale = _exact(col, dialect)
        inexact = (
            f"EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'{table.name}')"
            f" AND name = N'{col.name}' AND (TYPE_NAME(system_type_id) NOT IN (N'decimal',"
            f" N'numeric') OR precision <> {precision} OR scale <> {scale}))"
        )
        lines = []
        for ix in sorted(table.indexes, key=lambda i: i.name or ""):
            if col.name in {c.name for c in ix.columns}:
                lines += [
                    f"IF {inexact} AND EXISTS (SELECT 1 FROM sys.indexes WHERE"
                    f" name = N'{ix.name}' AND object_id = OBJECT_ID(N'{table.name}'))",
                    f"    DROP INDEX {q.quote(str(ix.name))} ON {q.format_table(table)};",
                ]
        null = "NULL" if col.nullable else "NOT NULL"
        lines += [
            f"IF {inexact}",
            f"    ALTER TABLE {q.format_table(table)} ALTER COLUMN {q.quote(col.name)}"
            f" {_numeric(col, dialect)} {null};",
        ]
        blocks.append("\n".join(lines))
    return blocks


def _mssql(conn: Connection, todo: dict[str, list[Column[Any]]]) -> list[str]:
    changes: list[str] = []
    for table_name, cols in todo.items():
        for block in money_tsql_blocks(conn.dialect, cols):
            conn.exec_driver_sql(block)
        table = metadata.tables[table_name]
        names = {ix["name"] for ix in inspect(conn).get_indexes(table_name)}
        for index in table.indexes:
            if index.name not in names:
                index.create(conn)
        changes.append(f"made {table_name} ({', '.join(c.name for c in cols)}) exact: NUMERIC")
    return changes


def _pending(conn: Connection) -> bool:
    """Whether this migration is not recorded yet (then the views are replaced)."""
    if not inspect(conn).has_table(schema_version.name):
        return True
    top = conn.execute(select(schema_version.c.Version).order_by(schema_version.c.Version.desc()))
    return (top.scalar() or 0) < VERSION


def upgrade(conn: Connection, run: MigrationRun) -> list[str]:
    """Make the money columns exact (not on SQLite); create or replace the views."""
    del run  # nothing to carry
    changes: list[str] = []
    todo = {} if conn.dialect.name == "sqlite" else _inexact(conn)
    if conn.dialect.name == "postgresql" and todo:
        todo, kept = _pg_alterable(conn, todo)
        changes += kept
    # Our views are dropped (and created again) only around a change of a column's type —
    # PostgreSQL refuses the change otherwise, SQL Server would keep stale metadata — so a
    # database with nothing to convert keeps its views, and the grants on them, as they are.
    if todo:
        drop_views(conn)
        if conn.dialect.name == "postgresql":
            changes += _postgresql(conn, todo)
        elif conn.dialect.name == "mssql":
            changes += _mssql(conn, todo)
    return changes + ensure_views(conn, replace=bool(todo) or _pending(conn))
