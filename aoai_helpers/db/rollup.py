"""The daily rollup ``AoaiUsageDaily``: the call table summed per day and group, kept exact.

The reports (:mod:`aoai_helpers.analysis.report`) read a month from this table instead of the
month's rows, so their time does not grow with the number of calls. One rollup row holds one
day's calls of one group — subscription (id and name), model, deployment, usage source and
currency: the ``GROUP BY`` the reports ran over the call table — with their count, the count
of priced ones, the token sums and the cost (NULL when none is priced: unpriced is never 0). A
NULL key column of the calls is '' in the rollup (a primary key column cannot be NULL); the
reports read '' back as NULL, so an empty text and a missing one are the same group there.

It is written in the same transaction as the rows, by every writer of them:

* inserts (ingest, ``local generate``; :meth:`aoai_helpers.pipeline.writer.RowWriter.insert`)
  add the rows *this* write stored to their groups (:meth:`Rollup.add`: an upsert adding the
  sums, ``INSERT … ON CONFLICT … DO UPDATE`` on SQLite and PostgreSQL, ``MERGE … WITH
  (HOLDLOCK)`` on SQL Server); a redelivered call is not stored, so it adds nothing;
* rewrites of stored rows (repricing, reconciliation, ``db upgrade``) rebuild the days they
  touched from the rows (:meth:`Rollup.rebuild`: delete the days' rollup rows, insert their
  ``GROUP BY`` again) — exact by construction, whatever changed;
* migration 0004 builds it for a database that predates it (``db init`` / ``db upgrade``).

Concurrent writers: on PostgreSQL every writer of rows holds the write lock
(:meth:`~aoai_helpers.pipeline.writer.RowWriter.lock`) for its transaction, on SQLite the
database lock serialises them, and SQL Server's MERGE holds the key range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Insert,
    and_,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection, Dialect

from aoai_helpers.db.bulk import BulkStatement, compile_bulk
from aoai_helpers.db.tables import DAILY_KEY, daily_table, token_table

__all__ = [
    "KEY_COLUMNS",
    "SUM_COLUMNS",
    "TOKEN_COLUMNS",
    "Rollup",
    "group_sums",
    "rebuild_statements",
]

#: The group of a rollup row (its primary key), as named in both tables.
KEY_COLUMNS: Final = DAILY_KEY
#: Token columns of the call table the rollup sums (same names in both tables).
TOKEN_COLUMNS: Final = (
    "PromptTokens",
    "CompletionTokens",
    "CachedTokens",
    "ReasoningTokens",
    "TotalTokens",
)
#: The rollup's measures, in the order :func:`group_sums` gives them.
SUM_COLUMNS: Final = ("Calls", "PricedCalls", *TOKEN_COLUMNS, "Cost")
_COLUMNS: Final = (*KEY_COLUMNS, *SUM_COLUMNS)
_COST: Final = len(SUM_COLUMNS) - 1


def group_sums(
    rows: Iterable[Sequence[Any]], columns: Sequence[str]
) -> dict[tuple[Any, ...], list[Any]]:
    """Rows of the call table (tuples in ``columns`` order) summed per rollup group.

    Keys are :data:`KEY_COLUMNS` values with None as ''; values are :data:`SUM_COLUMNS`
    values (``Cost`` None while no row of the group has one).
    """
    day, *texts = (columns.index(k) for k in KEY_COLUMNS)
    tokens = [columns.index(k) for k in TOKEN_COLUMNS]
    cost_at = columns.index("Cost")
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = (row[day], *(row[i] or "" for i in texts))
        sums = out.get(key)
        if sums is None:
            sums = out[key] = [0, 0, 0, 0, 0, 0, 0, None]
        sums[0] += 1
        for j, i in enumerate(tokens, start=2):
            sums[j] += row[i] or 0
        cost = row[cost_at]
        if cost is not None:
            sums[1] += 1
            sums[_COST] = cost if sums[_COST] is None else sums[_COST] + cost
    return out


def _upsert_sql(dialect: Dialect) -> BulkStatement | None:
    """SQLite's and PostgreSQL's adding upsert, compiled."""
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        return None
    stmt = insert(daily_table)
    mine, new = daily_table.c, stmt.excluded
    added: dict[str, Any] = {c: mine[c] + new[c] for c in SUM_COLUMNS[:-1]}
    added["Cost"] = case(
        (new.Cost.is_(None), mine.Cost),
        (mine.Cost.is_(None), new.Cost),
        else_=mine.Cost + new.Cost,
    )
    stmt = stmt.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=added)
    return compile_bulk(stmt, dialect, _COLUMNS, "rollup upsert")


def _merge_sql(dialect: Dialect) -> str:
    """SQL Server's adding upsert: ``MERGE … WITH (HOLDLOCK)`` on the group."""
    q = dialect.identifier_preparer
    table = q.format_table(daily_table)
    on = " AND ".join(f"t.{q.quote(k)} = s.{q.quote(k)}" for k in KEY_COLUMNS)
    adds = ", ".join(f"{q.quote(c)} = t.{q.quote(c)} + s.{q.quote(c)}" for c in SUM_COLUMNS[:-1])
    cost = q.quote("Cost")
    names = ", ".join(q.quote(c) for c in _COLUMNS)
    # the parameter is bound as a float: cast, so the sum is DECIMAL arithmetic (float outranks
    # decimal in T-SQL's type precedence, and t.Cost + a float would be a float sum)
    new = f"CAST(s.{cost} AS DECIMAL(38, 12))"
    return (
        f"MERGE INTO {table} WITH (HOLDLOCK) AS t"
        f" USING (VALUES ({', '.join('?' for _ in _COLUMNS)})) AS s ({names}) ON {on}"
        f" WHEN MATCHED THEN UPDATE SET {adds}, {cost} = CASE WHEN s.{cost} IS NULL THEN t.{cost}"
        f" WHEN t.{cost} IS NULL THEN {new} ELSE t.{cost} + {new} END"
        f" WHEN NOT MATCHED THEN INSERT ({names})"
        f" VALUES ({', '.join('s.' + q.quote(c) for c in _COLUMNS)});"
    )


def rebuild_statements(
    start: datetime | None = None, end: datetime | None = None, model: str | None = None
) -> tuple[Delete, Insert]:
    """The two statements of :meth:`Rollup.rebuild`: delete the rollup rows of the days of
    ``[start, end)`` (every day when None) — of one ``model`` when given — and insert those
    days' ``GROUP BY`` of the calls."""
    t, d = token_table.c, daily_table.c
    first = None if start is None else _midnight(start)
    # the day of ``end`` itself too: ``end`` may fall inside it
    after = None if end is None else _midnight(end) + timedelta(days=1)

    def window(day: Any, name: Any) -> list[Any]:
        return [
            *(() if first is None else (day >= first,)),
            *(() if after is None else (day < after,)),
            *(() if model is None else (name == model,)),
        ]

    keys = [t.ExecDateUTC, *(_or_empty(t[k]) for k in KEY_COLUMNS[1:])]
    grouped = (
        select(
            *keys,
            func.count(),
            func.count(t.Cost),
            *(func.sum(cast(t[k], BigInteger)) for k in TOKEN_COLUMNS),
            func.sum(t.Cost),
        )
        .where(*window(t.ExecDateUTC, t.ModelName))
        .group_by(*keys)
    )
    return (
        delete(daily_table).where(*window(d.ExecDateUTC, d.ModelName)),
        daily_table.insert().from_select(list(_COLUMNS), grouped),
    )


def _midnight(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def _or_empty(column: Any) -> ColumnElement[Any]:
    # a literal, not a bound parameter: SQL Server (qmark) takes the SELECT's ``?`` and the
    # GROUP BY's as different expressions and refuses the statement (Msg 8120)
    return func.coalesce(column, literal_column("''"))


class Rollup:
    """Keeps ``AoaiUsageDaily`` in step with the call rows on one dialect (module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._upsert = _upsert_sql(dialect)
        self._merge = _merge_sql(dialect) if dialect.name == "mssql" else None

    def add(self, conn: Connection, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> int:
        """Add stored rows (tuples in ``columns`` order, day as stored) to their groups; return
        the number of groups written."""
        sums = group_sums(rows, columns)
        # in key order: concurrent writers that lock rows as they go lock them in one order
        values = [(*key, *sums[key]) for key in sorted(sums)]
        if not values:
            return 0
        if self._upsert is not None:
            conn.exec_driver_sql(self._upsert.sql, self._upsert.params(values))
        elif self._merge is not None:
            conn.exec_driver_sql(self._merge, values)
        else:
            self._add_portably(conn, values)
        return len(values)

    def _add_portably(self, conn: Connection, values: list[tuple[Any, ...]]) -> None:
        """Elsewhere: update the group, insert it where no row was there (under the caller's
        write serialisation)."""
        c = daily_table.c
        for v in values:
            key = dict(zip(KEY_COLUMNS, v, strict=False))
            sums = dict(zip(SUM_COLUMNS, v[len(KEY_COLUMNS) :], strict=True))
            match = and_(*(c[k] == key[k] for k in KEY_COLUMNS))
            found = conn.execute(select(*(c[s] for s in SUM_COLUMNS)).where(match)).first()
            if found is None:
                conn.execute(daily_table.insert().values(**key, **sums))
                continue
            old = dict(zip(SUM_COLUMNS, found, strict=True))
            merged = {s: old[s] + sums[s] for s in SUM_COLUMNS[:-1]}
            merged["Cost"] = (
                old["Cost"]
                if sums["Cost"] is None
                else sums["Cost"]
                if old["Cost"] is None
                else old["Cost"] + sums["Cost"]
            )
            conn.execute(daily_table.update().where(match).values(**merged))

    def rebuild(
        self,
        conn: Connection,
        start: datetime | None = None,
        end: datetime | None = None,
        model: str | None = None,
    ) -> None:
        """Recompute the rollup of the days of calls in ``[start, end)`` (every day when None)
        — of one ``model`` when given — from the rows: after rows were rewritten."""
        for stmt in rebuild_statements(start, end, model):
            conn.execute(stmt)

    def rebuild_days(self, conn: Connection, times: Iterable[datetime]) -> None:
        """:meth:`rebuild` each distinct day of ``times`` (call times)."""
        for day in sorted({_midnight(t) for t in times}):
            self.rebuild(conn, day, day)
