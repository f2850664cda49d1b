"""The consumer loop: event log → ingest → checkpoint, for local mode and Event Hubs alike.

:func:`consume` runs over any :class:`~aoai_helpers.eventlog.eventhub.EventConsumer` (the local event
log, or Event Hubs with a checkpoint store) and one :class:`~aoai_helpers.pipeline.ingest.Ingestor`;
:func:`drain` runs it until the log has nothing more (demos, tests, catch-up jobs).

Delivery is at least once, billing exactly once: a batch is checkpointed only after its
transaction committed, and a redelivered batch is a no-op in the database (unique
``RequestId``; the redelivered calls are counted as ``duplicates``).

:func:`retry_until_open` holds a consumer that starts while the database is down: it retries
opening it with the same backoff as a failing batch, until it opens or ``stop`` is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from aoai_helpers.eventlog.eventhub import EventConsumer, EventData
from aoai_helpers.exceptions import DatabaseError
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent

__all__ = [
    "RETRY_INITIAL",
    "RETRY_MAX",
    "ConsumeStats",
    "consume",
    "drain",
    "retry_until_open",
]

T = TypeVar("T")

RETRY_INITIAL: Final = 0.5  # seconds before the first retry of a failed batch
RETRY_MAX: Final = 30.0  # the backoff doubles up to this

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ConsumeStats:
    """What a run of :func:`consume` did: committed batches, their events, their counts."""

    batches: int = 0
    events: int = 0
    result: BatchResult = field(default_factory=BatchResult)
    retries: int = 0  # failed attempts to store a batch (each retried)


def consume(
    consumer: EventConsumer,
    ingestor: Ingestor,
    *,
    batch_size: int = 500,
    max_wait: float = 0.5,
    stop: threading.Event | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    idle_exit: bool = False,
    retry_initial: float = RETRY_INITIAL,
    retry_max: float = RETRY_MAX,
) -> ConsumeStats:
    """Receive, store and checkpoint batches until ``stop`` is set (or, with ``idle_exit``, idle).

    Each batch, in this order — **store, then checkpoint**:

    1. ``consumer.receive(batch_size, max_wait)``: up to ``batch_size`` events after the
       checkpoint; an empty answer means the log was idle for ``max_wait`` seconds (with
       ``idle_exit=True`` the loop then returns).
    2. ``ingestor.ingest_batch(...)``: the whole batch in one transaction, each event's source
       ``eventlog:<partition>:<sequence number>``. If it raises (database down, tokenizer data
       missing), nothing is checkpointed: the same batch is retried after ``retry_initial``
       seconds, doubling up to ``retry_max``, one log line per failure (never event bodies).
    3. ``consumer.checkpoint(last event)``, per partition in the batch. A crash before this
       point redelivers the batch, which then stores nothing twice.
    4. ``on_batch(result)``, then the next batch.

    ``stop`` is checked between batches: a batch being stored is committed and checkpointed
    before the loop returns. While a failing batch waits for its retry, ``stop`` ends the wait
    and the loop returns without a checkpoint (the batch is delivered again next time).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    stop = stop if stop is not None else threading.Event()
    stats = ConsumeStats()
    while not stop.is_set():
        events = consumer.receive(batch_size, max_wait)
        if not events:
            if idle_exit:
                break
            continue
        result = _store(events, ingestor, stop, stats, retry_initial, retry_max)
        if result is None:  # stopped while the database was failing: not checkpointed
            break
        _checkpoint(consumer, events)
        stats.batches += 1
        stats.events += len(events)
        stats.result.add(result)
        if on_batch is not None:
            on_batch(result)
    return stats


def drain(
    consumer: EventConsumer, ingestor: Ingestor, *, batch_size: int = 500, max_wait: float = 0.0
) -> ConsumeStats:
    """Consume until a receive comes back empty (everything in the log stored and checkpointed)."""
    return consume(consumer, ingestor, batch_size=batch_size, max_wait=max_wait, idle_exit=True)


def _store(
    events: Sequence[EventData],
    ingestor: Ingestor,
    stop: threading.Event,
    stats: ConsumeStats,
    delay: float,
    retry_max: float,
) -> BatchResult | None:
    """Ingest ``events`` as one batch, retrying with backoff; ``None`` if ``stop`` ended it."""
    batch = [RawEvent(e.body, f"eventlog:{e.partition_id}:{e.sequence_number}") for e in events]
    span = f"{events[0].sequence_number}..{events[-1].sequence_number}"
    while True:
        try:
            return ingestor.ingest_batch(batch)
        except Exception as exc:
            stats.retries += 1
            log.warning(
                "storing %d events (sequence %s) failed, not checkpointed, retry in %.1f s: %s",
                len(batch),
                span,
                delay,
                _describe(exc),
            )
        if stop.wait(delay):
            log.warning("stopped before events %s could be stored; they will be redelivered", span)
            return None
        delay = min(delay * 2, retry_max)


def retry_until_open(
    open_: Callable[[], T],
    *,
    stop: threading.Event,
    on_failure: Callable[[str], None],
    retry_initial: float = RETRY_INITIAL,
    retry_max: float = RETRY_MAX,
    retry_on: tuple[type[BaseException], ...] = (DatabaseError,),
) -> T | None:
    """``open_()`` until it succeeds; ``None`` if ``stop`` is set first.

    After each failure of a kind in ``retry_on`` (by default
    :class:`~aoai_helpers.exceptions.DatabaseError`: unreachable, busy, refusing), calls
    ``on_failure`` with one line (the failure and the wait), then waits ``retry_initial``
    seconds, doubling up to ``retry_max`` — the backoff of a failing batch in :func:`consume`.
    ``stop`` ends the wait at once. Any other exception (bad configuration) propagates.
    """
    delay = retry_initial
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            return open_()
        except retry_on as exc:
            on_failure(f"attempt {attempt} failed, retry in {delay:.1f} s: {_describe(exc)}")
        if stop.wait(delay):
            break
        delay = min(delay * 2, retry_max)
    return None


def _checkpoint(consumer: EventConsumer, events: Sequence[EventData]) -> None:
    """Checkpoint the last event of each partition present in the batch."""
    last: dict[str, EventData] = {}
    for event in events:
        last[event.partition_id] = event
    for event in last.values():
        consumer.checkpoint(event)


def _describe(exc: BaseException) -> str:
    """One line about a failure: its type and the first line of its message, cut short."""
    text = str(exc).strip().splitlines()
    first = text[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
