"""The one writer of ``ApimAoaiToken`` rows: the row builder, the dialect rules, the statements.

Every path that stores or rewrites call rows goes through here — ingest
(:mod:`aoai_helpers.pipeline.ingest`), ``local generate`` (:mod:`aoai_helpers.synthetic.rows`),
repricing (:mod:`aoai_helpers.pipeline.reprice`) and reconciliation
(:mod:`aoai_helpers.pipeline.reconcile`):

* :func:`call_row` builds the row of one call, in :data:`ROW_COLUMNS` order, priced by
  :func:`aoai_helpers.core.pricing.price_call`, strings cut to their column size;
* :class:`RowWriter` knows the dialect: datetimes as text on SQLite (sqlite3's datetime
  adapter is deprecated), the 10 ms writer's stamp on SQL Server (``DATETIME`` keeps 1/300 s),
  the insert that skips stored ``RequestId`` (``INSERT … ON CONFLICT DO NOTHING`` on SQLite
  and PostgreSQL, ``MERGE … WITH (HOLDLOCK)`` on SQL Server, a re-check in the transaction
  elsewhere), executed as one DB-API executemany, with the driver's rowcount or, where it has
  none (pyodbc), a look-up of the ids; dead letters once per distinct body; the PostgreSQL
  write lock; the updates of stored rows.

Inserts and updates differ on purpose: an insert is keyed on ``RequestId`` and skips what is
stored, in bulk; repricing rewrites three columns by ``Id`` in bulk
(:meth:`RowWriter.update_costs`), and reconciliation's updates are guarded one by one by the
values the row had when read (:meth:`RowWriter.update_guarded`: ``rowcount == 1`` tells that
no concurrent reconciler changed it first), so they share the dialect rules, not the statement.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Insert, Table, TextClause, bindparam, select, text, update
from sqlalchemy.engine import Connection, Dialect

from aoai_helpers.clock import system_utcnow
from aoai_helpers.core.events import Usage
from aoai_helpers.core.pricing import Price
from aoai_helpers.db.bulk import BulkStatement, compile_bulk
from aoai_helpers.db.rollup import Rollup
from aoai_helpers.db.tables import RECONCILE_COLUMNS, STRING_LIMITS, dead_letter, token_table

__all__ = [
    "ROW_COLUMNS",
    "RowWriter",
    "call_row",
    "dead_letter_row",
    "row_insert",
    "skip_existing_insert",
    "sqlite_time",
]

#: Column order of the row tuples (every column but the identity ``Id``). The reconciliation
#: columns are not part of it: NULL until aoai_helpers.pipeline.reconcile sets them.
ROW_COLUMNS: Final[tuple[str, ...]] = tuple(
    c.name for c in token_table.columns if c.name != "Id" and c.name not in RECONCILE_COLUMNS
)
# Columns whose values come from the caller or the API (the others are validated or ours).
_LIMITS: Final = [
    (ROW_COLUMNS.index(k), n)
    for k, n in STRING_LIMITS.items()
    if k in ROW_COLUMNS
    and k
    not in {
        "RequestId",
        "Operation",
        "UsageSource",
        "EstimateEncoding",
        "EstimateQuality",
        "Currency",
    }
]
_CHECKED_STRINGS: Final = operator.itemgetter(*(i for i, _n in _LIMITS))
_SHORTEST_LIMIT: Final = min(n for _i, n in _LIMITS)
RID: Final = ROW_COLUMNS.index("RequestId")
#: pg_advisory_xact_lock key serialising the write transactions of concurrent ingesters.
_PG_WRITE_LOCK: Final = 0x414F4149  # "AOAI"
#: Dialects whose insert skips rows already stored, atomically (no re-check needed).
_SKIPS_CONFLICTS: Final = ("sqlite", "postgresql", "mssql")


def sqlite_time(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime type stores and reads back."""
    text_value = value.isoformat(" ")
    return text_value if value.microsecond else text_value + ".000000"


def call_row(
    when: Any,
    day: Any,
    who: Sequence[str | None],
    operation_id: str | None,
    model: str,
    streaming: bool,
    usage: Usage,
    request_id: str,
    call: tuple[int, str | None, str | None, str | None, int | None, str | None],
    source: str,
    encoding: str | None,
    known: bool,
    price: Price,
    stamp: Any,
    quality: str | None = None,
) -> tuple[Any, ...]:
    """The row of one call, in :data:`ROW_COLUMNS` order (strings cut to their column size).

    ``when``/``day``/``stamp`` as :class:`RowWriter` converts them; ``who`` the eight columns
    ``GatewayRegion`` … ``ApiName``; ``call`` is ``(EventVersion, Operation, DeploymentName,
    ApiVersion, StatusCode, ReportedModel)``; ``price`` what :func:`price_call` returned.
    """
    row = (
        when,
        day,
        *who,
        operation_id,
        model,
        1 if streaming else 0,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        request_id,
        *call,
        usage.cached_tokens,
        usage.reasoning_tokens,
        source,
        encoding,
        quality,
        1 if known else 0,
        *price,
        stamp,
    )
    if max(map(len, filter(None, _CHECKED_STRINGS(row))), default=0) <= _SHORTEST_LIMIT:
        return row
    cut = list(row)  # rare: some value may exceed its column
    for i, limit in _LIMITS:
        value = cut[i]
        if value is not None and len(value) > limit:
            cut[i] = value[:limit]
    return tuple(cut)


def dead_letter_row(
    body: bytes, reason: str, source: str, request_id: str | None, now: datetime
) -> dict[str, Any]:
    """The ``AoaiDeadLetter`` row of a body that could not be stored as a call."""
    return {
        "ReceivedAtUTC": now,
        "Source": source[:200] or None,
        "Reason": reason[:400],
        "RequestId": request_id[:64] if request_id else None,
        "RawSha256": hashlib.sha256(body).hexdigest(),
        "RawBody": body,
        "RawSize": len(body),
    }


def _merge(table: Table, key: str, columns: Sequence[str], dialect: Dialect) -> TextClause:
    """SQL Server's insert-if-absent: ``MERGE … WITH (HOLDLOCK) … WHEN NOT MATCHED THEN INSERT``.

    HOLDLOCK (serializable on the key range) makes the check and the insert one step, so two
    ingesters cannot both insert a key; the loser's row is skipped, not a unique-key error.
    """
    q = dialect.identifier_preparer
    cols = ", ".join(q.quote(c) for c in columns)
    key_q = q.quote(key)
    sql = (
        f"MERGE INTO {q.format_table(table)} WITH (HOLDLOCK) AS t"
        f" USING (VALUES ({', '.join(':' + c for c in columns)})) AS s ({cols})"
        f" ON t.{key_q} = s.{key_q}"
        f" WHEN NOT MATCHED THEN INSERT ({cols})"
        f" VALUES ({', '.join('s.' + q.quote(c) for c in columns)});"
    )
    return text(sql).bindparams(*(bindparam(c, type_=table.c[c].type) for c in columns))


def skip_existing_insert(
    table: Table, key: str, dialect: Dialect, columns: Sequence[str] | None = None
) -> Insert | TextClause:
    """An insert of ``columns`` into ``table`` that skips rows whose ``key`` (unique) is stored.

    ``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL, ``MERGE … WITH (HOLDLOCK)``
    on SQL Server; elsewhere a plain insert (the caller re-checks inside its transaction).
    Parameters are named after the columns.
    """
    cols = list(columns or [c.name for c in table.columns if not c.primary_key])
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=[key])
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=[key])
    if dialect.name == "mssql":
        return _merge(table, key, cols, dialect)
    return table.insert()


def row_insert(dialect: Dialect) -> tuple[str, list[str], bool]:
    """The statement executed (executemany) for ``ApimAoaiToken`` rows on ``dialect``: its
    SQL, its parameter names in order, and whether they are positional.

    Every name is a column of :data:`ROW_COLUMNS` (the row tuples are reordered to match).
    """
    bulk = _row_statement(dialect)
    return bulk.sql, list(bulk.names), bulk.positional


def _row_statement(dialect: Dialect) -> BulkStatement:
    stmt = skip_existing_insert(token_table, "RequestId", dialect, ROW_COLUMNS)
    return compile_bulk(stmt, dialect, ROW_COLUMNS, "row insert")


def existing(conn: Connection, column: Any, keys: list[str], chunk_size: int = 500) -> set[str]:
    """Of ``keys``, those stored in ``column``."""
    found: set[str] = set()
    for i in range(0, len(keys), chunk_size):
        chunk = keys[i : i + chunk_size]
        found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def _stored_by_others(conn: Connection, request_ids: list[str], now: datetime) -> set[str]:
    """Of ``request_ids``, those stored by another writer than the one stamped ``now``."""
    t = token_table.c
    found: set[str] = set()
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i : i + 500]
        stmt = select(t.RequestId).where(t.RequestId.in_(chunk), t.IngestedAtUTC != now)
        found.update(conn.execute(stmt).scalars())
    return found


_COST_UPDATE: Final = (
    update(token_table)
    .where(token_table.c.Id == bindparam("b_id"))
    .values(Cost=bindparam("b_cost"), Currency=bindparam("b_cur"), RateId=bindparam("b_rate"))
)


class RowWriter:
    """Stores and rewrites call rows on one dialect (see the module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        name = dialect.name
        self.insert_dead_stmt = skip_existing_insert(dead_letter, "RawSha256", dialect)
        # Rows go straight to the DB-API executemany: SQLAlchemy's per-row parameter processing
        # would cost more than the whole rest of the pipeline (see benchmarks/ingest.py).
        self._rows = _row_statement(dialect)
        self.row_sql, self.positional = self._rows.sql, self._rows.positional
        self.param_names = list(self._rows.names)
        self.datetimes_as_text = name == "sqlite"  # sqlite3's datetime adapter is deprecated
        # DATETIME keeps 1/300 s: a stamp on a 10 ms boundary is stored exactly, so the
        # IngestedAtUTC comparison that tells our rows from a concurrent writer's still works.
        self.stamp_10ms = name == "mssql"
        self.skips_conflicts = name in _SKIPS_CONFLICTS
        self.serialise_writes = name == "postgresql"  # see lock()
        # Rows really inserted by one executemany: its rowcount where the driver sums it up,
        # else counted afterwards (pyodbc reports no total for executemany).
        self.exact_rowcount = name != "mssql" and dialect.supports_sane_multi_rowcount
        # ids per IN (...) lookup: SQL Server takes at most 2,100 parameters per statement
        self.in_chunk = 5000 if name in ("sqlite", "postgresql") else 500
        self.rollup = Rollup(dialect)

    def stamp(self) -> datetime:
        """This write's ``IngestedAtUTC`` (physical time, not the business clock)."""
        now = system_utcnow()
        if self.stamp_10ms:
            now = now.replace(microsecond=now.microsecond // 10_000 * 10_000)
        return now

    def time(self, value: datetime) -> Any:
        """``value`` as the row tuples carry it on this dialect."""
        return sqlite_time(value) if self.datetimes_as_text else value

    def day(self, value: datetime) -> Any:
        """The ``ExecDateUTC`` of ``value`` (midnight), as the row tuples carry it."""
        midnight = value.replace(hour=0, minute=0, second=0, microsecond=0)
        return sqlite_time(midnight) if self.datetimes_as_text else midnight

    def lock(self, conn: Connection) -> None:
        """On PostgreSQL, one writer at a time (released at commit): concurrent ingesters of
        overlapping batches would otherwise lock the same RequestIds in different orders and
        deadlock. The write phase is short; the CPU work stays parallel."""
        if self.serialise_writes:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")

    def stored_ids(self, conn: Connection, request_ids: list[str]) -> set[str]:
        """Of ``request_ids``, those already stored."""
        return existing(conn, token_table.c.RequestId, request_ids, self.in_chunk)

    def params(self, rows: list[tuple[Any, ...]]) -> Any:
        """Rows as the driver wants them (they are built in column order, datetimes converted)."""
        return self._rows.params(rows)

    def insert(
        self, conn: Connection, rows: list[tuple[Any, ...]], now: datetime
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Insert ``rows`` stamped ``now``; return the rows this write stored and the duplicates.

        Rows another writer stored first (a redelivery, a concurrent ingester) are its rows, not
        ours: found from the driver's rowcount, or by looking the ids up where it has none. The
        stored ones are added to the daily rollup in the same transaction.
        """
        duplicates = 0
        if not self.skips_conflicts:
            again = self.stored_ids(conn, [r[RID] for r in rows])
            duplicates = len(again)
            rows = [r for r in rows if r[RID] not in again]
        if not rows:
            return rows, duplicates
        cur = conn.exec_driver_sql(self.row_sql, self.params(rows))
        count = cur.rowcount if self.exact_rowcount else None
        if count is None or count < 0 or count < len(rows):
            lost = _stored_by_others(conn, [r[RID] for r in rows], now)
            duplicates += len(lost)
            rows = [r for r in rows if r[RID] not in lost]
        self.rollup.add(conn, rows, ROW_COLUMNS)
        return rows, duplicates

    def insert_count(self, conn: Connection, rows: list[tuple[Any, ...]], now: datetime) -> int:
        """:meth:`insert` for bulk callers that need the count only."""
        return len(self.insert(conn, rows, now)[0])

    def insert_dead(self, conn: Connection, dead: Sequence[dict[str, Any]]) -> None:
        """Store the dead letters not stored yet (one per distinct body)."""
        have = existing(conn, dead_letter.c.RawSha256, [d["RawSha256"] for d in dead])
        new = [d for d in dead if d["RawSha256"] not in have]
        if new:
            conn.execute(self.insert_dead_stmt, new)

    def update_costs(self, conn: Connection, prices: list[tuple[int, Price]]) -> int:
        """Set ``Cost``/``Currency``/``RateId`` of rows by ``Id`` (executemany); return how many."""
        if prices:
            conn.execute(
                _COST_UPDATE,
                [
                    {"b_id": i, "b_cost": cost, "b_cur": cur, "b_rate": rate}
                    for i, (cost, cur, rate) in prices
                ],
            )
        return len(prices)

    def update_guarded(
        self, conn: Connection, row_id: int, guard: Sequence[Any], values: dict[str, Any]
    ) -> bool:
        """Rewrite row ``row_id`` if it still matches ``guard``; False when another writer
        changed it first (nothing written)."""
        stmt = update(token_table).where(token_table.c.Id == row_id, *guard).values(**values)
        return bool(conn.execute(stmt).rowcount == 1)
