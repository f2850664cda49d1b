"""The local stack: AOAI simulator + APIM-emulating gateway + event log + consumer, on loopback.

Local mode swaps exactly three boxes of the Azure path (ARCHITECTURE.md §1): AOAI (the
simulator), APIM (the gateway) and Event Hubs (the on-disk event log). The consumer runs the
same ingest code as the Azure Function, into the same database.

Usable in-process (tests, notebooks, ``make demo``)::

    with LocalStack(spec, db_url="sqlite:///data/aoai_usage.db") as stack:
        client = openai.AzureOpenAI(azure_endpoint=stack.info.gateway_url,
                                    api_key=stack.info.keys["bu-finance"], api_version="2024-10-21")
        ...
        stack.wait_ingested()

or as a background process (``python -m aoai_helpers local up|down|status``, see
:mod:`aoai_helpers.local.control`).

Like APIM's ``GatewayLlmLogs`` diagnostic, the gateway also writes the language-model log
(``<state_dir>/llm-log/``, :class:`~aoai_helpers.eventlog.llmlog.LocalLlmLog`), from a writer thread
off its event loop; with the consumer on, a reconciler thread runs
:func:`aoai_helpers.pipeline.reconcile.reconcile` against it every ``reconcile.interval_seconds``, so
pass-through streams go from ``prompt_only`` to ``reconciled`` as they would on Azure.
:meth:`LocalStack.wait_reconciled` waits for that to have happened for every call made. Either way the stack writes what clients need — URLs,
database URL, each BU's subscription key — to ``<state_dir>/stack.json``, readable only by its
owner (mode 0600). Subscription keys are kept in ``<state_dir>/keys.json`` (0600) and reused
across restarts, so a client's key stays valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import orjson
import uvicorn

from aoai_helpers.clock import system_now
from aoai_helpers.core.files import write_private
from aoai_helpers.db.rates import BusinessUnit, set_bu
from aoai_helpers.db.store import engine_from_url, transaction
from aoai_helpers.eventlog.eventhub import EventProducer, LocalEventLog
from aoai_helpers.eventlog.llmlog import LocalLlmLog
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.gateway import BackendCut, Gateway
from aoai_helpers.local.limits import TokenLimiter
from aoai_helpers.local.llm_records import Exchange, llm_log_records
from aoai_helpers.local.simulator import Simulator, StreamCutError
from aoai_helpers.pipeline.consume import ConsumeStats, consume
from aoai_helpers.pipeline.ingest import Ingestor
from aoai_helpers.pipeline.reconcile import ReconcileResult, reconcile
from aoai_helpers.pipeline.service import ensure_db
from aoai_helpers.spec import CaptureMode, Spec

__all__ = ["STATE_FILE", "EventWriter", "LocalStack", "ServerThread", "StackInfo"]

STATE_FILE: Final = "stack.json"
KEYS_FILE: Final = "keys.json"
_log = logging.getLogger("aoai_helpers.local")
T = TypeVar("T")
#: Seconds after a failed write before the gateway tries to serve (and log) calls again.
RETRY_AFTER: Final = 1.0


@dataclass(frozen=True)
class StackInfo:
    """What clients need to use a running stack (the content of ``stack.json``)."""

    gateway_url: str
    simulator_url: str
    database_url: str
    event_log: str
    capture: str
    pid: int
    started: str
    keys: dict[str, str] = field(repr=False)
    backend_key: str = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackInfo:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class _QuietCut(logging.Filter):
    """Hide the server's traceback for a connection aborted on purpose (a configured stream cut)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (BackendCut, StreamCutError))


def _timed_protocol(header_timeout: float) -> type[Any]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) closing a connection that has
    not sent its first request's headers within ``header_timeout`` seconds (after a response,
    uvicorn's own keep-alive timeout bounds the wait for the next request)."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - the local extra installs httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeaderTimeout(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_late(self) -> None:
            if self.cycle is None:  # no request has started on this connection
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeout


class ServerThread:
    """An ASGI app served by uvicorn on a pre-bound loopback socket, in a daemon thread.

    ``header_timeout``: a connection that sends no request headers within it is closed.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "server",
        header_timeout: float = 10.0,
    ):
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose
        # proto is TCP, and without it every keep-alive response (headers and body are two
        # writes) waited ~40 ms for the client's delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self.sock.listen(2048)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan="auto",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            http=_timed_protocol(header_timeout),
        )
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_QuietCut())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        serve = self.server.serve(sockets=[self.sock])
        try:
            import uvloop  # the ``local`` extra (not on Windows): a faster event loop
        except ImportError:
            asyncio.run(serve)
        else:
            uvloop.run(serve)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()


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


def _load_keys(state_dir: Path, spec: Spec) -> tuple[dict[str, str], str]:
    """Subscription keys (reused across restarts) and the simulator's backend key."""
    path = state_dir / KEYS_FILE
    stored: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            stored = orjson.loads(path.read_bytes())
    subs = dict(stored.get("subscriptions") or {})
    keys = {s.id: subs.get(s.id) or secrets.token_hex(16) for s in spec.subscriptions}
    backend = stored.get("backend") or secrets.token_hex(16)
    if keys != subs or backend != stored.get("backend"):
        write_private(path, {"subscriptions": {**subs, **keys}, "backend": backend})
    return keys, backend


class LocalStack:
    """Simulator, gateway, event log and consumer for ``spec`` (see the module docstring).

    ``db_url`` defaults to the spec's database; ``capture`` overrides the spec's streaming
    mode; ``state_dir`` defaults to the spec's ``local.state_dir``. ``consumer=False`` leaves
    the event log unread (tests of the log itself, or a separate ``consume`` process);
    ``clock`` is the gateway's clock (see :class:`~aoai_helpers.local.gateway.Gateway`);
    ``token_limits=False`` leaves the spec's per-BU token limits unapplied (a replay of past
    traffic, which APIM already admitted, at many calls a second).
    """

    def __init__(
        self,
        spec: Spec,
        *,
        db_url: str | None = None,
        capture: CaptureMode | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        consumer: bool = True,
        write_state: bool = True,
        batch_size: int = 200,
        clock: Callable[[], datetime] | None = None,
        token_limits: bool = True,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._token_limits = token_limits
        self.db_url = db_url or spec.database.url
        self.capture: CaptureMode = capture or spec.capture.streaming
        self.state_dir = Path(state_dir or spec.local.state_dir)
        self.event_log = LocalEventLog(self.state_dir / "events")
        self.llm_log = LocalLlmLog(self.state_dir / "llm-log")
        self._consumer_on = consumer
        self._write_state = write_state
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._servers: list[ServerThread] = []
        self._writer: EventWriter | None = None
        self._llm_writer: LlmLogWriter | None = None
        self._consumer_thread: threading.Thread | None = None
        self._reconciler: threading.Thread | None = None
        self._reconcile_lock = threading.Lock()
        self._engine: Any = None
        self.reconciled: ReconcileResult | None = None  # the last run's result
        self.consumed: ConsumeStats | None = None
        self.consumer_error: BaseException | None = None
        self.simulator: Simulator | None = None
        self.gateway: Gateway | None = None
        self._info: StackInfo | None = None

    @property
    def info(self) -> StackInfo:
        if self._info is None:
            raise RuntimeError("the stack is not running")
        return self._info

    def start(self) -> StackInfo:
        """Start everything; returns what clients need (also written to ``stack.json``)."""
        engine = engine_from_url(self.db_url)
        ensure_db(engine)
        units = [
            BusinessUnit(s.id, s.business_unit, s.display_name, s.cost_center, s.monthly_budget)
            for s in self.spec.subscriptions
        ]
        with transaction(engine) as conn:
            set_bu(conn, units)
        keys, backend_key = _load_keys(self.state_dir, self.spec)
        host = self.spec.local.host
        self.simulator = Simulator(self.spec, keys=[backend_key])
        sim = ServerThread(self.simulator, host, self.spec.local.simulator_port, "aoai-simulator")
        self._servers.append(sim.start())
        self._writer = EventWriter(self.event_log.producer())
        limited = self.spec.subscriptions if self._token_limits else ()
        limiter = TokenLimiter({s.id: s for s in limited})
        self._llm_writer = LlmLogWriter(
            self.llm_log, self.spec.deployment_models(), consumed=limiter.consume
        )
        self.gateway = Gateway(
            self.spec,
            keys=keys,
            backend_secret=backend_key,
            sink=self._writer,
            backend_urls={b.name: sim.url for b in self.spec.backends},
            capture=self.capture,
            clock=self._clock,
            llm_sink=self._llm_writer,
            healthy=self._writer.healthy,
            limiter=limiter,
            body_timeout=self.spec.local.body_timeout_seconds,
        )
        gw = ServerThread(
            self.gateway,
            host,
            self.spec.local.gateway_port,
            "apim-gateway",
            header_timeout=self.spec.local.header_timeout_seconds,
        )
        self._servers.append(gw.start())
        if self._consumer_on:
            ingestor = Ingestor(engine, deployment_models=self.spec.deployment_models())
            self._consumer_thread = threading.Thread(
                target=self._consume, args=(ingestor,), name="consumer", daemon=True
            )
            self._consumer_thread.start()
            self._engine = engine
            self._reconciler = threading.Thread(
                target=self._reconcile_loop, name="reconciler", daemon=True
            )
            self._reconciler.start()
        else:
            engine.dispose()
        self._info = StackInfo(
            gateway_url=gw.url,
            simulator_url=sim.url,
            database_url=self.db_url,
            event_log=str(self.event_log.directory),
            capture=self.capture,
            pid=os.getpid(),
            started=system_now().isoformat(timespec="seconds"),
            keys=keys,
            backend_key=backend_key,
        )
        if self._write_state:
            write_private(self.state_dir / STATE_FILE, self._info.as_dict())
        return self._info

    def _consume(self, ingestor: Ingestor) -> None:
        consumer = self.event_log.consumer(self.spec.event_hub.consumer_group)
        try:
            self.consumed = consume(
                consumer, ingestor, batch_size=self._batch_size, max_wait=0.1, stop=self._stop
            )
        except BaseException as exc:  # surfaced by wait_ingested/stop, never lost silently
            self.consumer_error = exc
            _log.exception("the local consumer stopped")
        finally:
            consumer.close()

    def _reconcile_loop(self) -> None:
        interval = self.spec.reconcile.interval_seconds
        while not self._stop.wait(interval):
            try:
                self.reconcile_now()
            except Exception:  # logged; the next run tries again (nothing was half-written)
                _log.exception("local reconciliation failed")

    def reconcile_now(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> ReconcileResult:
        """Reconcile the database with the local language-model log now (one run)."""
        if self._engine is None:
            raise RuntimeError("the stack runs without a consumer: nothing to reconcile")
        with self._reconcile_lock:
            self.reconciled = reconcile(
                self._engine, self.llm_log, self.spec.reconcile, since=since, until=until
            )
            return self.reconciled

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event and language-model record the gateway produced is written."""
        events = self._writer.flush(timeout) if self._writer else True
        records = self._llm_writer.flush(timeout) if self._llm_writer else True
        return events and records

    def wait_ingested(self, timeout: float = 30.0) -> bool:
        """Wait until every event in the log has been stored and checkpointed."""
        deadline = time.monotonic() + timeout
        if not self.flush(timeout):
            return False
        group = self.spec.event_hub.consumer_group
        while time.monotonic() < deadline:
            if self.consumer_error is not None:
                raise self.consumer_error
            if self.event_log.checkpoint_of(group) >= self.event_log.last_sequence_number():
                return True
            time.sleep(0.02)
        return False

    def wait_reconciled(
        self, timeout: float = 30.0, *, since: datetime | None = None
    ) -> ReconcileResult | None:
        """Wait until every call made so far is stored, then reconcile once and return the
        result; None if the events were not all stored within ``timeout``.

        ``since`` widens the window to the calls made since then (the demo history's calls
        are dated in the past)."""
        if not self.wait_ingested(timeout):
            return None
        return self.reconcile_now(since=since)

    def stop(self) -> None:
        """Stop accepting calls, log what is in flight, commit and checkpoint, then stop."""
        if self._info is not None and self._consumer_thread is not None:
            with contextlib.suppress(Exception):  # best effort: what is left stays in the log
                self.wait_ingested(timeout=10)
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._llm_writer is not None:
            self._llm_writer.close()
            self._llm_writer = None
        self._stop.set()
        if self._consumer_thread is not None:
            self._consumer_thread.join(timeout=60)
            self._consumer_thread = None
        if self._reconciler is not None:
            self._reconciler.join(timeout=60)
            self._reconciler = None
        if self._engine is not None:
            with contextlib.suppress(Exception):  # a last run for what the consumer just stored
                self.reconcile_now()
            self._engine.dispose()
            self._engine = None
        if self._write_state and self._info is not None:
            with contextlib.suppress(FileNotFoundError):
                state = self.state_dir / STATE_FILE
                if orjson.loads(state.read_bytes()).get("pid") == os.getpid():
                    state.unlink()
        self._info = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(spec: Spec, **kwargs: Any) -> Iterator[LocalStack]:
    """``with running(spec) as stack:`` — :class:`LocalStack` as a context manager."""
    stack = LocalStack(spec, **kwargs)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
