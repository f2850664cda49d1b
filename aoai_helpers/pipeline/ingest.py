"""The ingest pipeline: raw event bodies → parsed → usage resolved → priced → stored.

A batch goes through two steps; :meth:`Ingestor.ingest_batch` runs both, and
:meth:`Ingestor.ingest` can run the first in worker processes for bulk files:

*prepare* (CPU, reads only)
    every body is parsed (:func:`aoai_helpers.core.events.parse_event`) — one that cannot be
    parsed, or whose usage cannot be resolved, becomes a dead letter (raw body + reason);
    events are de-duplicated on ``RequestId`` inside the batch — and against the table where
    the insert cannot skip stored ids itself (so a redelivered batch skips the costly part
    there); usage is resolved (contract §5) and priced with the rate in effect at the call's
    time.
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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.engine import Connection, Engine

from aoai_helpers.core.events import EventError, UsageEvent, parse_event
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import RateBook, price_call
from aoai_helpers.core.usage import ResolvedUsage, resolve_usage
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.exceptions import TokenizerError
from aoai_helpers.pipeline.workers import ordered_map
from aoai_helpers.pipeline.writer import (
    ROW_COLUMNS,
    RowWriter,
    call_row,
    dead_letter_row,
    row_insert,
    skip_existing_insert,
    sqlite_time,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ROW_COLUMNS",
    "BatchResult",
    "Ingestor",
    "RawEvent",
    "load_rates",
    "row_insert",
    "skip_existing_insert",
]

DEFAULT_BATCH_SIZE: Final = 5000

_SOURCE, _COST, _KNOWN, _MODEL = (
    ROW_COLUMNS.index(k) for k in ("UsageSource", "Cost", "ModelKnown", "ModelName")
)


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
    from aoai_helpers.db.engine import engine_from_url

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
        self.writer = RowWriter(engine.dialect)
        w = self.writer  # the statement and the dialect rules, named as tests read them
        self._row_sql, self._param_names, self._positional = w.row_sql, w.param_names, w.positional
        self._skips_conflicts, self._exact_rowcount = w.skips_conflicts, w.exact_rowcount

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
        init = (url, self.deployment_models, self.default_model, self._fixed_rates)
        items = ([(r.body, r.source) for r in batch] for batch in _chunks(events, batch_size))
        prepared = ordered_map(
            _worker_prepare,
            items,
            workers=workers,
            initializer=_worker_init,
            initargs=init,
            ahead=workers,
        )
        with closing(prepared):
            for one in prepared:
                self._store_into(total, one, on_batch)
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
        now = self.writer.stamp()  # the writer's stamp (see RowWriter.insert)
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
        # Where the insert itself skips stored ids, it is the de-duplication: no look-up here
        # (a redelivered batch is resolved again, then skipped; on PostgreSQL a look-up of
        # 5,000 ids could even be planned as a scan of a table never analysed). Elsewhere the
        # ids already stored are skipped before the costly resolution.
        known: set[str] = set()
        if self._fixed_rates is None or not self.writer.skips_conflicts:
            with transaction(self.engine) as conn:  # reads only: rates, ids already stored
                rates = self._fixed_rates if self._fixed_rates is not None else load_rates(conn)
                if not self.writer.skips_conflicts:
                    known = self.writer.stored_ids(conn, list(events))
        else:
            rates = self._fixed_rates
        rows: list[tuple[Any, ...]] = []
        stamp = self.writer.time(now)
        for rid, (ev, raw) in events.items():
            if rid in known:
                result.duplicates += 1  # redelivered: skip before the (costly) resolution
                continue
            try:
                res = resolve_usage(ev, self.deployment_models, self.default_model)
                rows.append(self._row(ev, res, rates, stamp))
            except TokenizerError:
                raise  # systemic (tokenizer data missing): fail the batch, do not checkpoint
            except Exception as exc:  # a bug must not lose the event: keep it aside
                _add_dead(dead, raw.body, f"could not resolve usage: {exc!r}", raw.source, rid, now)
        return _Prepared(result, rows, dead, now)

    def _store(self, prepared: _Prepared) -> BatchResult:
        """The write transaction of a prepared batch; returns its final counts."""
        result, rows, dead = prepared.result, prepared.rows, prepared.dead
        with transaction(self.engine) as conn:
            if rows or dead:
                self.writer.lock(conn)
            if rows:
                rows, duplicates = self.writer.insert(conn, rows, prepared.now)
                result.duplicates += duplicates
                result.stored += len(rows)
            if dead:
                self.writer.insert_dead(
                    conn, [{k: v for k, v in d.items() if k != "_count"} for d in dead.values()]
                )
        for row in rows:
            _count_row(result, row)
        result.dead_lettered += sum(d["_count"] for d in dead.values())
        return result

    def _row(
        self, ev: UsageEvent, res: ResolvedUsage, rates: RateBook, now: Any
    ) -> tuple[Any, ...]:
        """The row of one call, in ``ROW_COLUMNS`` order (strings cut to their column size)."""
        info = normalize_model(res.model)
        if self.writer.datetimes_as_text:  # inline RowWriter.time/day: this runs per call
            when: Any = sqlite_time(ev.exec_time)
            day: Any = when[:10] + " 00:00:00.000000"
        else:
            when = ev.exec_time
            day = when.replace(hour=0, minute=0, second=0, microsecond=0)
        return call_row(
            when,
            day,
            (
                ev.gateway_region,
                ev.gateway_service_name,
                ev.subscription_id,
                ev.subscription_name,
                ev.user_name,
                ev.user_email,
                ev.product_name,
                ev.api_name,
            ),
            ev.operation_id,
            info.name,
            ev.is_streaming,
            res.usage,
            ev.request_id,
            (
                ev.event_version,
                ev.operation,
                ev.deployment_name,
                ev.api_version,
                ev.status_code,
                res.model,
            ),
            res.source,
            res.encoding,
            info.known,
            price_call(res.usage, res.source, rates, info.name, ev.exec_time),
            now,
            res.quality,
        )


def _add_dead(
    dead: dict[str, dict[str, Any]],
    body: bytes,
    reason: str,
    source: str,
    request_id: str | None,
    now: datetime,
) -> None:
    row = dead_letter_row(body, reason, source, request_id, now)
    if row["RawSha256"] in dead:
        dead[row["RawSha256"]]["_count"] += 1
        return
    dead[row["RawSha256"]] = {**row, "_count": 1}


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
