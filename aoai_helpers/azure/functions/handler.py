"""The body of the ingestion function: one Event Hubs batch → one ``ingest_batch`` transaction.

``function_app.py`` (the template shipped in the deployment zip) only declares the trigger and
calls :func:`handle`; everything that can be tested without the Functions host lives here.

Order — **store, then checkpoint** (see :mod:`aoai_helpers.pipeline.ingest`): the Functions host
checkpoints a partition after the invocation returns. :func:`handle` returns only once the whole
batch is committed, in one transaction. If the database fails it raises (nothing was
committed), and the function's retry policy (``@app.retry(strategy="exponential_backoff",
max_retry_count="-1", …)`` in the template) makes the host re-run the same batch with backoff
instead of checkpointing past it. Microsoft's guide, *Azure Functions error handling and
retries* (``functions-bindings-error-pages.md``): "Event Hubs checkpoints aren't written until
after the retry policy for the execution has completed"; without a policy the checkpoint
advances even after an exception and the batch is lost to the function. Delivery is therefore
at least once: a batch redelivered after a crash between commit and checkpoint is skipped row by
row on ``RequestId`` (it stores nothing new).

Bad events do not fail the batch: the ingestor dead-letters each one (``IngestDeadLetter``,
with its reason and the partition / sequence number / offset it came from) and stores the rest.

One log line per batch (``logging``, category ``Function.ingest_usage.User`` on the host): the
:meth:`~aoai_helpers.pipeline.ingest.BatchResult.summary`, the partition and sequence range, and the
elapsed milliseconds — never an event body, a key or an unmasked database URL.

Per worker process, the first call opens one engine (``config.db_url()``), creates or upgrades
the schema (``service.ensure_db``: a new database gets its tables and the default rates) and
builds one :class:`~aoai_helpers.pipeline.ingest.Ingestor` (``config.deployment_models()``); later
calls reuse them. :func:`reset` drops that cache (tests, or after the settings changed).

``azure.functions`` is imported for type checking only: the events are used through
``get_body()``, ``sequence_number``, ``offset`` and ``metadata``, so this module (and the
package) imports without the Functions library.

The reconcile timer (``reconcile_usage`` in the template) calls :func:`reconcile_timer`: the
same cached engine, :class:`~aoai_helpers.eventlog.llmlog_azure.LogAnalyticsLlmLog` on the cloud of
``AOAI_CLOUD`` with the function's managed identity (``ManagedIdentityCredential``; the
user-assigned one of ``AOAI_IDENTITY_CLIENT_ID`` when set), the reconcile settings of the app
(:func:`~aoai_helpers.azure.functions.settings.reconcile_config`), then
:func:`~aoai_helpers.pipeline.reconcile.reconcile` and one log line: its
:meth:`~aoai_helpers.pipeline.reconcile.ReconcileResult.summary`. Without
``AOAI_LLM_LOG_WORKSPACE_ID`` it logs one warning and returns — no exception, so the host does
not count a failure every few minutes on an app without a language-model log. A query that
fails (:class:`~aoai_helpers.exceptions.ReconcileError`: nothing was changed) is logged in one
line and re-raised, so the run shows as failed; the next tick reads the same window again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.engine import Engine

from aoai_helpers import config
from aoai_helpers.azure.functions.settings import (
    FUNCTION_NAME,
    LLM_LOG_WORKSPACE_ID,
    RECONCILE_FUNCTION_NAME,
    reconcile_config,
)
from aoai_helpers.clouds import get_cloud
from aoai_helpers.db.engine import engine_from_url, masked_url
from aoai_helpers.exceptions import AoaiHelpersError
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent
from aoai_helpers.pipeline.service import ensure_db

if TYPE_CHECKING:
    import azure.functions as func

    from aoai_helpers.pipeline.reconcile import ReconcileResult

__all__ = ["event_source", "handle", "reconcile_timer", "reset"]

log = logging.getLogger(__name__)

#: ``IngestDeadLetter.Source`` holds at most this many characters.
_SOURCE_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class _Worker:
    """What one worker process keeps between invocations."""

    engine: Engine
    ingestor: Ingestor


_LOCK = threading.Lock()  # the Python worker may run invocations on several threads
_WORKER: _Worker | None = None


def _worker() -> _Worker:
    """The cached engine and ingestor, created (and the schema ensured) on first use."""
    global _WORKER
    with _LOCK:
        if _WORKER is None:
            url = config.db_url()
            models = config.deployment_models()
            engine = engine_from_url(url)
            try:
                changes = ensure_db(engine)
            except BaseException:
                engine.dispose()
                raise
            if changes:
                log.info("%s: database %s: %s", FUNCTION_NAME, masked_url(url), "; ".join(changes))
            _WORKER = _Worker(engine, Ingestor(engine, deployment_models=models))
        return _WORKER


def reset() -> None:
    """Forget the cached engine and ingestor (the next call opens them again)."""
    global _WORKER
    with _LOCK:
        if _WORKER is not None:
            _WORKER.engine.dispose()
        _WORKER = None


def _partition_info(events: Sequence[func.EventHubEvent]) -> tuple[str | None, str | None]:
    """``(event hub, partition id)`` from the batch's trigger metadata, when the host gave it.

    With ``cardinality="many"`` every event shares the batch's metadata; its ``PartitionContext``
    names the hub and the partition. Missing or unreadable metadata yields ``(None, None)``.
    """
    try:
        meta: Any = events[0].metadata
        ctx = meta.get("PartitionContext") if isinstance(meta, dict) else None
    except Exception:  # malformed metadata must not fail the batch: it only names a source
        return None, None
    if not isinstance(ctx, dict):
        return None, None
    hub, pid = ctx.get("EventHubName"), ctx.get("PartitionId")
    return (str(hub) if hub is not None else None, str(pid) if pid is not None else None)


def event_source(
    event: func.EventHubEvent, *, hub: str | None = None, partition: str | None = None
) -> str:
    """Where an event came from, as stored with a dead letter.

    ``eventhub <hub> partition <id> seq <sequence number> offset <offset>``; parts the host did
    not supply are left out.
    """
    parts = ["eventhub"]
    if hub:
        parts.append(hub)
    if partition is not None:
        parts.append(f"partition {partition}")
    seq = event.sequence_number
    if seq is not None:
        parts.append(f"seq {seq}")
    offset = event.offset
    if offset is not None:
        parts.append(f"offset {offset}")
    return " ".join(parts)[:_SOURCE_LIMIT]


def _sequence_range(events: Sequence[func.EventHubEvent]) -> str:
    numbers = [e.sequence_number for e in events if e.sequence_number is not None]
    if not numbers:
        return "seq ?"
    low, high = min(numbers), max(numbers)
    return f"seq {low}" if low == high else f"seq {low}..{high}"


def handle(events: Sequence[func.EventHubEvent]) -> BatchResult:
    """Ingest one Event Hubs batch in one transaction and log its one-line summary.

    Returns the batch's counts. Raises :class:`~aoai_helpers.exceptions.DatabaseError` when the
    database fails (nothing of the batch was stored: let it propagate, so the retry policy holds
    the checkpoint), :class:`~aoai_helpers.exceptions.ConfigError` for bad settings and
    :class:`~aoai_helpers.exceptions.TokenizerError` when the bundled tokenizer data is missing.
    These are re-raised without their chained cause: a driver error can quote the statement's
    parameters (caller fields, raw bodies), which must not reach the host's logs.
    """
    if not events:
        return BatchResult()
    started = time.perf_counter()
    hub, partition = _partition_info(events)
    where = (f"partition {partition} " if partition is not None else "") + _sequence_range(events)
    batch = [RawEvent(e.get_body(), event_source(e, hub=hub, partition=partition)) for e in events]
    try:
        result = _worker().ingestor.ingest_batch(batch)
    except AoaiHelpersError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        log.error(
            "%s: %d events (%s) NOT stored, checkpoint held for a retry: %s: %s; %.0f ms",
            FUNCTION_NAME,
            len(events),
            where,
            type(exc).__name__,
            exc,
            elapsed,
        )
        raise type(exc)(str(exc)) from None
    elapsed = (time.perf_counter() - started) * 1000
    log.info("%s: %s; %s; %.0f ms", FUNCTION_NAME, result.summary(), where, elapsed)
    return result


def reconcile_timer(
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
    transport: Any = None,
) -> ReconcileResult | None:
    """One run of the reconcile timer (see the module docstring); ``None`` when the app has no
    workspace to read.

    ``env`` (default: the process environment) holds the reconcile app settings; the database
    is the ingestion's (``AOAI_DB_URL``). ``credential`` (default: the managed identity) and
    ``transport`` (an azure-core transport) are for tests. Raises what
    :func:`~aoai_helpers.pipeline.reconcile.reconcile` raises — a
    :class:`~aoai_helpers.exceptions.ReconcileError` when the log cannot be read — without its
    chained cause, after one error line.
    """
    started = time.perf_counter()
    try:
        cfg = reconcile_config(env)
    except AoaiHelpersError as exc:
        log.error("%s: not run: %s", RECONCILE_FUNCTION_NAME, exc)
        raise type(exc)(str(exc)) from None
    if not cfg.workspace_id:
        log.warning(
            "%s: %s is not set: no language-model log to reconcile (set llm_log.workspace_id "
            "in the spec and run function deploy)",
            RECONCILE_FUNCTION_NAME,
            LLM_LOG_WORKSPACE_ID,
        )
        return None
    from aoai_helpers.eventlog.llmlog_azure import LogAnalyticsLlmLog
    from aoai_helpers.pipeline.reconcile import reconcile

    if credential is None:
        credential = _managed_identity(cfg.identity_client_id)
    try:
        source = LogAnalyticsLlmLog(
            cfg.workspace_id,
            get_cloud(cfg.cloud),
            credential,
            correlation_column=cfg.correlation_column,
            transport=transport,
        )
        result = reconcile(_worker().engine, source, cfg.settings)
    except AoaiHelpersError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        log.error(
            "%s: nothing reconciled: %s: %s; %.0f ms",
            RECONCILE_FUNCTION_NAME,
            type(exc).__name__,
            exc,
            elapsed,
        )
        raise type(exc)(str(exc)) from None
    elapsed = (time.perf_counter() - started) * 1000
    log.info("%s: %s; %.0f ms", RECONCILE_FUNCTION_NAME, result.summary(), elapsed)
    return result


def _managed_identity(client_id: str | None) -> Any:
    """The function app's managed identity: the user-assigned one ``client_id`` names, else the
    system-assigned one."""
    from azure.identity import ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return ManagedIdentityCredential()
