"""The gateway's sinks in the local stack: queues written from threads of their own, off the
gateway's event loop — :class:`EventWriter` (the event log) and :class:`LlmLogWriter` (the
language-model log). Imports ``eventlog`` and ``local.llm_records``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, Generic, TypeVar

from aoai_helpers.eventlog.eventhub import EventProducer
from aoai_helpers.eventlog.llmlog import LocalLlmLog
from aoai_helpers.local.llm_records import Exchange, llm_log_records

__all__ = [
    "RETRY_AFTER",
    "EventWriter",
    "LlmLogWriter",
]

_log = logging.getLogger("aoai_helpers.local")


T = TypeVar("T")


#: Seconds after a failed write before the gateway tries to serve (and log) calls again.
RETRY_AFTER: Final = 1.0


class _QueueWriter(Generic[T]):
    """Queues items from the gateway and writes them from a thread of its own, in batches of
    whatever accumulated, off the gateway's event loop; :meth:`close` flushes everything queued
    before returning. Each item's future completes once its batch is written (or fails with the
    batch's error, which is also logged once): the gateway waits on it before it completes a
    response. After a failed batch :meth:`healthy` is False until a write succeeds again or
    :data:`RETRY_AFTER` seconds passed (then the gateway tries again)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[T, Future[None]] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, item: T) -> Future[None]:
        done: Future[None] = Future()
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put((item, done))
        return done

    def healthy(self) -> bool:
        """Whether the last write worked (or the last failure is old enough to try again)."""
        failed = self._failed_at
        return failed is None or time.monotonic() - failed > RETRY_AFTER

    def _write(self, items: list[T]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            entries = [b for b in batch if b is not None]
            if entries:
                error: BaseException | None = None
                try:
                    self._write([item for item, _ in entries])
                    self._failed_at = None
                except Exception as exc:  # keep the gateway alive; the error is logged once
                    error = exc
                    self._failed_at = time.monotonic()
                    _log.exception("%s could not write %d item(s)", self._thread.name, len(entries))
                for _, done in entries:
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)
            with self._lock:
                self._pending -= len(entries)
                if self._pending == 0:
                    self._idle.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued item has been written."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


class EventWriter(_QueueWriter[bytes]):
    """The gateway's event sink: appends events to the log (one append, one fsync, per batch)."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        super().__init__("event-writer")

    def _write(self, items: list[bytes]) -> None:
        self._producer.send(items)

    def close(self) -> None:
        super().close()
        self._producer.close()


class LlmLogWriter(_QueueWriter[Exchange]):
    """The gateway's language-model sink: turns exchanges into log records and appends them.

    Counting a stream's tokens (when it carried no usage) happens in this thread, never on the
    gateway's event loop; ``consumed(subscription, tokens)`` hears of what each call of a
    stream without reported usage consumed (the local token limits count it).
    """

    def __init__(
        self,
        log: LocalLlmLog,
        deployment_models: dict[str, str],
        consumed: Callable[[str, int], None] | None = None,
    ) -> None:
        self._log = log
        self._models = deployment_models
        self._consumed = consumed
        super().__init__("llm-log-writer")

    def _write(self, items: list[Exchange]) -> None:
        records = []
        for exchange in items:
            found = llm_log_records(exchange, self._models)
            records += found
            if self._consumed and exchange.usage is None and exchange.subscription:
                for record in found:
                    self._consumed(exchange.subscription, record.total_tokens or 0)
        self._log.append(records)
