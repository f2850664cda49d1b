"""The local stack: AOAI simulator + APIM-emulating gateway + event log + consumer, on loopback.

Local mode swaps exactly three boxes of the Azure path (docs/architecture.md): AOAI (the
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

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from aoai_helpers.clock import system_now
from aoai_helpers.core.files import write_private
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.eventlog.eventhub import LocalEventLog
from aoai_helpers.eventlog.llmlog import LocalLlmLog
from aoai_helpers.local.gateway import Gateway
from aoai_helpers.local.limits import TokenLimiter
from aoai_helpers.local.servers import ServerThread
from aoai_helpers.local.simulator import Simulator
from aoai_helpers.local.writers import EventWriter
from aoai_helpers.local.writers import LlmLogWriter as LlmLogWriter
from aoai_helpers.pipeline.consume import ConsumeStats, consume
from aoai_helpers.pipeline.ingest import Ingestor
from aoai_helpers.pipeline.reconcile import ReconcileResult, reconcile
from aoai_helpers.pipeline.service import ensure_db
from aoai_helpers.spec import CaptureMode, Spec

__all__ = ["STATE_FILE", "EventWriter", "LocalStack", "ServerThread", "StackInfo"]

STATE_FILE: Final = "stack.json"
KEYS_FILE: Final = "keys.json"
_log = logging.getLogger("aoai_helpers.local")


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
        engine = self._open_db()
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
            self._start_consumer(engine)
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

    def _open_db(self) -> Any:
        """The database, its schema made and the spec's business units written."""
        engine = engine_from_url(self.db_url)
        ensure_db(engine)
        units = [
            BusinessUnit(s.id, s.business_unit, s.display_name, s.cost_center, s.monthly_budget)
            for s in self.spec.subscriptions
        ]
        with transaction(engine) as conn:
            set_bu(conn, units)
        return engine

    def _start_consumer(self, engine: Any) -> None:
        """The consumer and reconciler threads, on ``engine``."""
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
