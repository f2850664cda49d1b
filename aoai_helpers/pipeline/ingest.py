"""The ingest pipeline: raw event bodies → parsed → usage resolved → priced → stored.

A batch goes through two steps; :meth:`Ingestor.ingest_batch` runs both, and
:meth:`Ingestor.ingest` can run the first in worker processes for bulk files:

*prepare* (CPU, reads only)
    every body is parsed (:func:`aoai_helpers.core.events.parse_event`) — one that cannot be
    parsed, or whose usage cannot be resolved, becomes a dead letter (raw body + reason);
    events are de-duplicated on ``RequestId`` inside the batch and against the table (so a
    redelivered batch skips the costly part); usage is resolved (contract §5) and priced with
    the rate in effect at the call's time.
*store* (one transaction)
    the rows are inserted — ``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL,
    ``MERGE … WITH (HOLDLOCK) … WHEN NOT MATCHED THEN INSERT`` on SQL Server, a re-check inside
    the transaction elsewhere (:func:`skip_existing_insert`) — and the dead letters (once per
    distinct body); rows another ingester stored first count as duplicates (from the driver's
    rowcount, or, where it has none for executemany as with pyodbc, by looking the ids up);
    the transaction commits.

Order with a checkpointing source (Event Hubs, the local event log) — **store, then
checkpoint**: the caller checkpoints only after ``ingest_batch`` returned. A crash between the
commit and the checkpoint redelivers the batch, and the unique ``RequestId`` makes the
redelivery a no-op (at-least-once delivery, exactly-once billing). If the database fails,
``ingest_batch`` raises :class:`~aoai_helpers.exceptions.DatabaseError` with nothing committed,
and the caller must not checkpoint.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import operator
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Insert, Table, TextClause, bindparam, select, text
from sqlalchemy.engine import Connection, Dialect, Engine

from aoai_helpers.clock import system_utcnow
from aoai_helpers.core.events import EventError, UsageEvent, parse_event
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import RateBook, cost_of
from aoai_helpers.core.usage import ResolvedUsage, resolve_usage
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.store import (
    RECONCILE_COLUMNS,
    STRING_LIMITS,
    dead_letter,
    token_table,
    transaction,
)
from aoai_helpers.exceptions import TokenizerError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchResult",
    "Ingestor",
    "RawEvent",
    "load_rates",
    "row_insert",
    "skip_existing_insert",
]

DEFAULT_BATCH_SIZE: Final = 5000

#: Column order of the tuples built by ``Ingestor._row`` (every column but the identity ``Id``).
#: The reconciliation columns are not part of it: NULL until aoai_helpers.pipeline.reconcile sets them.
ROW_COLUMNS: Final[tuple[str, ...]] = tuple(
    c.name for c in token_table.columns if c.name != "Id" and c.name not in RECONCILE_COLUMNS
)
# Columns whose values come from the caller or the API (the others are validated or ours).
_LIMITS: Final = [
    (ROW_COLUMNS.index(k), n)
    for k, n in STRING_LIMITS.items()
    if k in ROW_COLUMNS
    and k not in {"RequestId", "Operation", "UsageSource", "EstimateEncoding", "Currency"}
]
_CHECKED_STRINGS: Final = operator.itemgetter(*(i for i, _n in _LIMITS))
_SHORTEST_LIMIT: Final = min(n for _i, n in _LIMITS)
_RID, _SOURCE, _COST, _KNOWN, _MODEL = (
    ROW_COLUMNS.index(k) for k in ("RequestId", "UsageSource", "Cost", "ModelKnown", "ModelName")
)
#: pg_advisory_xact_lock key serialising the write transactions of concurrent ingesters.
_PG_WRITE_LOCK: Final = 0x414F4149  # "AOAI"


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One body as delivered, with where it came from (file:line, partition:sequence…)."""

    body: bytes
    source: str = ""


@dataclass(slots=True)
class BatchResult:
    """Counts for one batch (or, added up, for a whole run)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    estimated: int = 0
    prompt_only: int = 0
    unpriced: int = 0
    unknown_models: set[str] = field(default_factory=set)

    def add(self, other: BatchResult) -> None:
        """Accumulate ``other`` into this result."""
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dead_lettered += other.dead_lettered
        self.estimated += other.estimated
        self.prompt_only += other.prompt_only
        self.unpriced += other.unpriced
        self.unknown_models |= other.unknown_models

    def summary(self) -> str:
        """The one-line summary the CLI and the function print."""
        line = (
            f"{self.received} received: {self.stored} stored, {self.duplicates} duplicates, "
            f"{self.dead_lettered} dead-lettered"
        )
        extra = []
        if self.estimated or self.prompt_only:
            extra.append(f"{self.estimated} estimated, {self.prompt_only} prompt-only")
        if self.unpriced:
            extra.append(f"{self.unpriced} unpriced")
        return line + (f" ({'; '.join(extra)})" if extra else "")


@dataclass(slots=True)
class _Prepared:
    """A batch after the CPU work: partial counts, rows to insert, dead letters by sha256."""

    result: BatchResult
    rows: list[tuple[Any, ...]]
    dead: dict[str, dict[str, Any]]
    now: datetime


def _chunks(events: Iterable[RawEvent], size: int) -> Iterator[list[RawEvent]]:
    batch: list[RawEvent] = []
    for raw in events:
        batch.append(raw)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_WORKER: Ingestor | None = None


def _worker_init(
    url: str, deployment_models: dict[str, str], default_model: str | None, rates: RateBook | None
) -> None:
    """Worker process start: its own engine (reads only) and ingestor."""
    global _WORKER
    from aoai_helpers.db.store import engine_from_url

    _WORKER = Ingestor(
        engine_from_url(url),
        deployment_models=deployment_models,
        default_model=default_model,
        rates=rates,
    )


def _worker_prepare(items: list[tuple[bytes, str]]) -> _Prepared:
    """Worker process: the CPU work of one batch."""
    if _WORKER is None:
        raise RuntimeError("ingest worker used before its initializer ran")
    return _WORKER._prepare([RawEvent(body, source) for body, source in items])


#: Dialects whose insert skips rows already stored, atomically (no re-check needed).
_SKIPS_CONFLICTS: Final = ("sqlite", "postgresql", "mssql")


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
    """The statement the Ingestor executes (executemany) for ``ApimAoaiToken`` rows on
    ``dialect``: its SQL, its parameter names in order, and whether they are positional.

    Every name is a column of :data:`ROW_COLUMNS` (the row tuples are reordered to match).
    """
    stmt = skip_existing_insert(token_table, "RequestId", dialect, ROW_COLUMNS)
    compiled = stmt.compile(dialect=dialect, column_keys=list(ROW_COLUMNS))
    order = list(compiled.positiontup or []) if compiled.positional else list(compiled.binds)
    if sorted(order) != sorted(ROW_COLUMNS):
        raise RuntimeError(f"insert parameters {order} do not match the row layout")
    return str(compiled), order, bool(compiled.positional)


def load_rates(conn: Connection) -> RateBook:
    """The rates stored in ``AoaiTokenRate``."""
    return RateBook(read_rates(conn))


class Ingestor:
    """Turns batches of raw bodies into stored rows; holds the engine and the rate book.

    ``deployment_models`` maps deployment names to model names, used when the response names
    no model; ``default_model`` is the model of events that name none at all (v1 streams of
    deployments whose requests carry no ``model``). Both decide the tokenizer of estimates and
    the rate. ``rates`` is reloaded from the database for every batch unless given explicitly.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        deployment_models: dict[str, str] | None = None,
        default_model: str | None = None,
        rates: RateBook | None = None,
    ) -> None:
        self.engine = engine
        self.deployment_models = {k.lower(): v for k, v in (deployment_models or {}).items()}
        self.default_model = default_model
        self._fixed_rates = rates
        dialect = engine.dialect.name
        self._insert_dead = skip_existing_insert(dead_letter, "RawSha256", engine.dialect)
        # Rows go straight to the DB-API executemany: SQLAlchemy's per-row parameter processing
        # would cost more than the whole rest of the pipeline (see benchmarks/ingest.py).
        self._row_sql, self._param_names, self._positional = row_insert(engine.dialect)
        self._param_index = [ROW_COLUMNS.index(name) for name in self._param_names]
        self._datetimes_as_text = dialect == "sqlite"  # sqlite3's datetime adapter is deprecated
        # DATETIME keeps 1/300 s: a stamp on a 10 ms boundary is stored exactly, so the
        # IngestedAtUTC comparison that tells our rows from a concurrent ingester's still works.
        self._stamp_10ms = dialect == "mssql"
        self._skips_conflicts = dialect in _SKIPS_CONFLICTS
        self._serialise_writes = dialect == "postgresql"  # see _store
        # Rows really inserted by one executemany: its rowcount where the driver sums it up,
        # else counted afterwards (pyodbc reports no total for executemany).
        self._exact_rowcount = dialect != "mssql" and engine.dialect.supports_sane_multi_rowcount
        # ids per IN (...) lookup: SQL Server takes at most 2,100 parameters per statement
        self._in_chunk = 5000 if dialect in ("sqlite", "postgresql") else 500

    def ingest_batch(self, batch: Sequence[RawEvent]) -> BatchResult:
        """Ingest one batch in one transaction (see the module docstring for the order)."""
        return self._store(self._prepare(batch))

    def ingest(
        self,
        events: Iterable[RawEvent],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[BatchResult], None] | None = None,
        workers: int = 0,
    ) -> BatchResult:
        """Ingest a stream of events in batches of ``batch_size`` (one transaction each).

        Batches are committed in order; if one fails, the ones before it stay committed and
        the exception propagates (run again: what was stored is skipped as duplicates).

        ``workers > 0`` prepares batches (parse, resolve, price) in that many worker processes
        while this process writes, for bulk loads on multi-core machines. Writes stay in this
        process, in order, one transaction per batch; a batch prepared before the previous one
        was committed may hold calls that batch stored: they are counted as duplicates when
        written. In-memory SQLite databases cannot be shared and always run in-process.
        """
        total = BatchResult()
        if workers <= 0 or self.engine.url.database in (None, "", ":memory:"):
            for batch in _chunks(events, batch_size):
                self._store_into(total, self._prepare(batch), on_batch)
            return total
        url = self.engine.url.render_as_string(hide_password=False)  # to the workers, never printed
        context = multiprocessing.get_context("spawn")  # no fork: safe with threads in the parent
        init = (url, self.deployment_models, self.default_model, self._fixed_rates)
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_init, initargs=init
        ) as pool:
            pending: deque[Future[_Prepared]] = deque()
            try:
                for batch in _chunks(events, batch_size):
                    pending.append(
                        pool.submit(_worker_prepare, [(r.body, r.source) for r in batch])
                    )
                    while len(pending) > workers:
                        self._store_into(total, pending.popleft().result(), on_batch)
                while pending:
                    self._store_into(total, pending.popleft().result(), on_batch)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return total

    def _store_into(
        self,
        total: BatchResult,
        prepared: _Prepared,
        on_batch: Callable[[BatchResult], None] | None,
    ) -> None:
        done = self._store(prepared)
        total.add(done)
        if on_batch:
            on_batch(done)

    def _prepare(self, batch: Sequence[RawEvent]) -> _Prepared:
        """CPU work of a batch, no writes: parse, de-duplicate, resolve usage, price, build rows."""
        result = BatchResult(received=len(batch))
        now = system_utcnow()  # the writer's stamp (see _stored_by_others), not the business clock
        if self._stamp_10ms:
            now = now.replace(microsecond=now.microsecond // 10_000 * 10_000)
        events: dict[str, tuple[UsageEvent, RawEvent]] = {}
        dead: dict[str, dict[str, Any]] = {}
        for raw in batch:
            parsed = parse_event(raw.body)
            if isinstance(parsed, EventError):
                _add_dead(dead, parsed.raw, parsed.reason, raw.source, parsed.request_id, now)
            elif parsed.request_id in events:
                result.duplicates += 1
            else:
                events[parsed.request_id] = (parsed, raw)
        with transaction(self.engine) as conn:  # reads only: rates, and ids already stored
            rates = self._fixed_rates if self._fixed_rates is not None else load_rates(conn)
            known = _existing(conn, token_table.c.RequestId, list(events), self._in_chunk)
        rows: list[tuple[Any, ...]] = []
        stamp = _sqlite_time(now) if self._datetimes_as_text else now
        for rid, (ev, raw) in events.items():
            if rid in known:
                result.duplicates += 1  # redelivered: skip before the (costly) resolution
                continue
            try:
                rows.append(
                    self._row(
                        ev,
                        resolve_usage(ev, self.deployment_models, self.default_model),
                        rates,
                        stamp,
                    )
                )
            except TokenizerError:
                raise  # systemic (tokenizer data missing): fail the batch, do not checkpoint
            except Exception as exc:  # a bug must not lose the event: keep it aside
                _add_dead(dead, raw.body, f"could not resolve usage: {exc!r}", raw.source, rid, now)
        return _Prepared(result, rows, dead, now)

    def _store(self, prepared: _Prepared) -> BatchResult:
        """The write transaction of a prepared batch; returns its final counts."""
        result, rows, dead = prepared.result, prepared.rows, prepared.dead
        with transaction(self.engine) as conn:
            if self._serialise_writes and (rows or dead):
                # One writer at a time (released at commit): concurrent ingesters of
                # overlapping batches would otherwise lock the same RequestIds in different
                # orders and deadlock. The write phase is short; the CPU work stays parallel.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")
            if rows and not self._skips_conflicts:
                # No ON CONFLICT here: re-check inside the write transaction.
                again = _existing(
                    conn, token_table.c.RequestId, [r[_RID] for r in rows], self._in_chunk
                )
                result.duplicates += len(again)
                rows = [r for r in rows if r[_RID] not in again]
            if rows:
                cur = conn.exec_driver_sql(self._row_sql, self._params(rows))
                count = cur.rowcount if self._exact_rowcount else None
                if count is None or count < 0 or count < len(rows):
                    # Lost a race with a concurrent ingester (or the driver cannot say): the
                    # rows it stored first are its rows, not ours.
                    lost = _stored_by_others(conn, [r[_RID] for r in rows], prepared.now)
                    result.duplicates += len(lost)
                    rows = [r for r in rows if r[_RID] not in lost]
                result.stored += len(rows)
            if dead:
                have = _existing(conn, dead_letter.c.RawSha256, list(dead))
                new_dead = [
                    {k: v for k, v in d.items() if k != "_count"}
                    for sha, d in dead.items()
                    if sha not in have
                ]
                if new_dead:
                    conn.execute(self._insert_dead, new_dead)
        for row in rows:
            _count_row(result, row)
        result.dead_lettered += sum(d["_count"] for d in dead.values())
        return result

    def _row(
        self, ev: UsageEvent, res: ResolvedUsage, rates: RateBook, now: Any
    ) -> tuple[Any, ...]:
        """The row of one call, in ``ROW_COLUMNS`` order (strings cut to their column size)."""
        info = normalize_model(res.model)
        usage = res.usage
        cost: float | None
        currency: str | None = None
        rate_id: int | None = None
        if res.source == "unbilled":
            cost = 0.0
        elif res.source == "unmetered":
            cost = None  # counted as an unpriced call of its BU, never costed as 0
        else:
            rate = rates.lookup(info.name, ev.exec_time)
            if rate is None:
                cost = None  # unpriced: never 0
            else:
                cost, currency, rate_id = cost_of(usage, rate), rate.currency, rate.rate_id
        if self._datetimes_as_text:
            when: Any = _sqlite_time(ev.exec_time)
            day: Any = when[:10] + " 00:00:00.000000"
        else:
            when = ev.exec_time
            day = when.replace(hour=0, minute=0, second=0, microsecond=0)
        row = (
            when,
            day,
            ev.gateway_region,
            ev.gateway_service_name,
            ev.subscription_id,
            ev.subscription_name,
            ev.user_name,
            ev.user_email,
            ev.product_name,
            ev.api_name,
            ev.operation_id,
            info.name,
            1 if ev.is_streaming else 0,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            ev.request_id,
            ev.event_version,
            ev.operation,
            ev.deployment_name,
            ev.api_version,
            ev.status_code,
            res.model,
            usage.cached_tokens,
            usage.reasoning_tokens,
            res.source,
            res.encoding,
            1 if info.known else 0,
            cost,
            currency,
            rate_id,
            now,
        )
        if max(map(len, filter(None, _CHECKED_STRINGS(row))), default=0) <= _SHORTEST_LIMIT:
            return row
        cut = list(row)  # rare: some value may exceed its column
        for i, limit in _LIMITS:
            value = cut[i]
            if value is not None and len(value) > limit:
                cut[i] = value[:limit]
        return tuple(cut)

    def _params(self, rows: list[tuple[Any, ...]]) -> Any:
        """Rows as the driver wants them (they are built in column order, datetimes converted)."""
        if self._positional:
            if self._param_names == list(ROW_COLUMNS):
                return rows
            idx = self._param_index
            return [tuple(row[i] for i in idx) for row in rows]
        return [
            dict(zip(self._param_names, (row[i] for i in self._param_index), strict=True))
            for row in rows
        ]


def _add_dead(
    dead: dict[str, dict[str, Any]],
    body: bytes,
    reason: str,
    source: str,
    request_id: str | None,
    now: datetime,
) -> None:
    sha = hashlib.sha256(body).hexdigest()
    if sha in dead:
        dead[sha]["_count"] += 1
        return
    dead[sha] = {
        "ReceivedAtUTC": now,
        "Source": source[:200] or None,
        "Reason": reason[:400],
        "RequestId": request_id[:64] if request_id else None,
        "RawSha256": sha,
        "RawBody": body,
        "RawSize": len(body),
        "_count": 1,
    }


def _count_row(result: BatchResult, row: tuple[Any, ...]) -> None:
    """Add a stored row's category (estimated, prompt-only, unpriced, unknown model) to ``result``."""
    source = row[_SOURCE]
    if source == "estimated":
        result.estimated += 1
    elif source == "prompt_only":
        result.prompt_only += 1
    if row[_COST] is None:
        result.unpriced += 1
    if not row[_KNOWN]:
        result.unknown_models.add(row[_MODEL])


def _sqlite_time(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime type stores and reads back."""
    text_value = value.isoformat(" ")
    return text_value if value.microsecond else text_value + ".000000"


def _stored_by_others(conn: Connection, request_ids: list[str], now: datetime) -> set[str]:
    """Of ``request_ids``, those stored by another ingestion than the one stamped ``now``."""
    t = token_table.c
    found: set[str] = set()
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i : i + 500]
        stmt = select(t.RequestId).where(t.RequestId.in_(chunk), t.IngestedAtUTC != now)
        found.update(conn.execute(stmt).scalars())
    return found


def _existing(conn: Connection, column: Any, keys: list[str], chunk_size: int = 500) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(keys), chunk_size):
        chunk = keys[i : i + chunk_size]
        found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return found
