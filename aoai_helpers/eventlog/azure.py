"""Azure Event Hubs behind the protocols of :mod:`aoai_helpers.eventlog.eventhub` (SDK calls live here).

:class:`AzureEventHubConsumer` is an :class:`~aoai_helpers.eventlog.eventhub.EventConsumer` and
:class:`AzureEventHubProducer` an :class:`~aoai_helpers.eventlog.eventhub.EventProducer`: ingest code
(:func:`aoai_helpers.pipeline.consume.consume`) runs on them exactly as on the local event log.

Consumer: back-pressure through the callback
--------------------------------------------
``EventHubConsumerClient.receive_batch`` runs in a background thread (started by the first
``receive()``). Its ``on_event_batch(partition_context, events)`` callback converts the
events, hands the batch to ``receive()`` through a queue and **waits** until the batch's last
event is checkpointed (or the consumer is closed). The sync SDK drives every partition from that
one thread, so nothing new reaches ingest before the batch in hand is stored and checkpointed
(prefetched events wait in the SDK's buffer). ``checkpoint(event)`` calls the partition's
``PartitionContext.update_checkpoint`` with the SDK's own event object. Partitions without a
checkpoint start at the beginning of the retention (``starting_position="-1"``): billing must
not skip calls logged before the first consumer started.

Errors
------
The SDK retries by itself and reports what it gave up on to ``on_error``: one warning line
each. ``receive()`` raises :class:`EventHubClientError` (one line, secrets masked) when the
receiving thread ends, on an ``AuthenticationError`` (retrying cannot help), or when errors
keep coming (less than ``_QUIET`` s apart, no batch in between) for ``error_timeout`` seconds.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self, TypeVar, cast

from sqlalchemy.engine import Engine

from aoai_helpers import clock
from aoai_helpers.auth import credential as default_credential
from aoai_helpers.clouds import get_cloud
from aoai_helpers.eventlog.checkpoints import checkpoint_store_for
from aoai_helpers.eventlog.eventhub import MAX_EVENT_BYTES, EventData
from aoai_helpers.exceptions import AoaiHelpersError, ConfigError, InputError
from aoai_helpers.spec import Spec

try:
    from azure.eventhub import EventData as AzureEventData
    from azure.eventhub import (
        EventDataBatch,
        EventHubConsumerClient,
        EventHubProducerClient,
        PartitionContext,
    )
    from azure.eventhub.amqp import AmqpMessageBodyType
    from azure.eventhub.exceptions import AuthenticationError
except ImportError as exc:  # pragma: no cover - the [azure] extra is missing
    raise ConfigError(
        "azure-eventhub is not installed: pip install 'apim-aoai-proxy[azure]'"
    ) from exc

__all__ = [
    "AzureEventHubConsumer",
    "AzureEventHubProducer",
    "BatchingClient",
    "EventHubClientError",
    "ReceivingClient",
]

_QUIET: Final = 180.0  # s without an error report that ends an error streak
_SECRET = re.compile(r"(?i)\b(SharedAccessKey|SharedAccessSignature|AccountKey|sig)=[^;&\s]+")

log = logging.getLogger(__name__)


class EventHubClientError(AoaiHelpersError):
    """Event Hubs failed: the client stopped, or refused the credential, or kept failing."""


class ReceivingClient(Protocol):
    """What the consumer needs of ``EventHubConsumerClient``."""

    def receive_batch(
        self,
        on_event_batch: Callable[[PartitionContext, list[AzureEventData]], None],
        **kwargs: Any,
    ) -> None: ...
    def close(self) -> None: ...


class BatchingClient(Protocol):
    """What the producer needs of ``EventHubProducerClient``."""

    def create_batch(self, *, partition_key: str | None = None) -> EventDataBatch: ...
    def send_batch(self, event_data_batch: EventDataBatch) -> None: ...
    def close(self) -> None: ...


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, secrets masked, cut to 300 characters."""
    lines = str(exc).strip().splitlines()
    text = _SECRET.sub(r"\1=***", lines[0])[:300] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _body(event: AzureEventData) -> bytes:
    """The event's payload as bytes (APIM's ``log-to-eventhub`` sends a data section)."""
    body = event.body
    if event.body_type == AmqpMessageBodyType.DATA:
        return b"".join(cast("Sequence[bytes]", body))
    if isinstance(body, bytes):
        return body
    try:  # an AMQP value or sequence: its text (ingest dead-letters what is not an event)
        return event.body_as_str().encode("utf-8")
    except (TypeError, ValueError):
        return repr(body).encode("utf-8")


def _convert(event: AzureEventData, partition_id: str) -> EventData:
    enqueued = event.enqueued_time
    return EventData(
        body=_body(event),
        sequence_number=event.sequence_number if event.sequence_number is not None else -1,
        enqueued_time=enqueued.astimezone(UTC) if enqueued is not None else clock.system_now(),
        partition_id=partition_id,
        offset=event.offset or "",
    )


@dataclass(eq=False, slots=True)
class _Handover:
    """One callback's batch: its partition context, the SDK's events and ours."""

    context: PartitionContext
    raw: list[AzureEventData]
    events: list[EventData]
    returned: int = 0  # events already returned by receive()
    done: threading.Event = field(default_factory=threading.Event)  # set: the callback returns


class AzureEventHubConsumer:
    """An :class:`~aoai_helpers.eventlog.eventhub.EventConsumer` on ``EventHubConsumerClient``.

    ``client`` must have been built with a checkpoint store (:meth:`from_spec` does that).
    ``max_batch_size`` and ``prefetch`` (default: ``max(300, max_batch_size)``) go to
    ``receive_batch``; ``starting_position`` applies to partitions without a checkpoint.
    ``on_close`` runs after the client is closed (:meth:`from_spec`: releases the store).
    """

    def __init__(
        self,
        client: ReceivingClient,
        *,
        name: str = "Event Hubs",
        max_batch_size: int = 500,
        prefetch: int | None = None,
        starting_position: str | int | datetime = "-1",
        error_timeout: float | None = 600.0,
        close_timeout: float = 30.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self._receive_options: dict[str, Any] = {
            "max_batch_size": max_batch_size,
            "max_wait_time": None,  # the callback only ever gets events
            "prefetch": prefetch if prefetch is not None else max(300, max_batch_size),
            "starting_position": starting_position,
            "on_error": self._on_error,
        }
        self._error_timeout = error_timeout
        self._close_timeout = close_timeout
        self._on_close = on_close
        self._queue: queue.Queue[_Handover | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding: list[_Handover] = []  # handed over, callback still waiting
        self._current: _Handover | None = None  # the one receive() is handing out
        self._thread: threading.Thread | None = None
        self._closed = False
        self._error: EventHubClientError | None = None
        self._streak: tuple[float, float] | None = None  # first and last error of a streak

    @classmethod
    def from_spec(
        cls,
        spec: Spec,
        credential: Any = None,
        connection_string: str | None = None,
        *,
        engine: Engine | None = None,
        **options: Any,
    ) -> AzureEventHubConsumer:
        """A consumer of ``spec.event_hub`` (its consumer group), checkpointing per ``spec.consumer``.

        Signs in with ``connection_string`` (Listen rule) if given, else with ``credential``
        (default: :func:`aoai_helpers.auth.credential` for the spec's cloud). ``engine``
        is the database of the ``database`` checkpoint store (default: ``spec.database.url``).
        """
        hub = spec.event_hub
        store, close_store = checkpoint_store_for(spec, credential=credential, engine=engine)
        try:
            client = _connect(
                EventHubConsumerClient,
                spec,
                credential,
                connection_string,
                consumer_group=hub.consumer_group,
                checkpoint_store=store,
            )
        except BaseException:
            close_store()
            raise
        options.setdefault("max_batch_size", spec.consumer.batch_size)
        name = f"{_host(spec)}/{hub.name} ({hub.consumer_group})"
        return cls(client, name=name, on_close=close_store, **options)

    # ------------------------------------------------------------------------- the protocol

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        """Up to ``max_events`` events of one partition; ``[]`` after ``max_wait`` s idle."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._raise_if_failed()
        self._start()
        current = self._current
        if current is None or current.returned >= len(current.events):
            try:
                item = self._queue.get(timeout=max(0.0, max_wait))
            except queue.Empty:
                item = None
            self._raise_if_failed()
            if item is None:
                return []
            self._current = current = item
        chunk = current.events[current.returned : current.returned + max_events]
        current.returned += len(chunk)
        return chunk

    def checkpoint(self, event: EventData) -> None:
        """Checkpoint ``event`` in its partition; its batch's callback returns after the last."""
        with self._lock:
            if self._closed:
                raise EventHubClientError(f"{self.name}: the consumer is closed")
            handover, index = self._find(event)
        handover.context.update_checkpoint(handover.raw[index])
        if index == len(handover.events) - 1:
            with self._lock:
                if handover in self._outstanding:
                    self._outstanding.remove(handover)
            handover.done.set()

    def _find(self, event: EventData) -> tuple[_Handover, int]:
        for handover in self._outstanding:
            if handover.context.partition_id != event.partition_id:
                continue
            for index, ours in enumerate(handover.events[: handover.returned]):
                if ours.sequence_number == event.sequence_number and ours == event:
                    return handover, index
        raise ValueError(
            f"event {event.sequence_number} (partition {event.partition_id!r}, offset "
            f"{event.offset!r}) is not a received event awaiting its checkpoint on {self.name}"
        )

    def close(self) -> None:
        """Release waiting callbacks, close the client, wait for the thread (idempotent).

        Events received but not checkpointed are delivered again to the next consumer.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting, self._outstanding = self._outstanding, []
        for handover in waiting:
            handover.done.set()
        self._queue.put(None)
        try:
            self._client.close()
        except Exception as exc:
            log.warning("%s: closing the client failed: %s", self.name, _one_line(exc))
        if self._thread is not None:
            self._thread.join(self._close_timeout)
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- the SDK's side

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventhub-receive", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            self._client.receive_batch(self._on_event_batch, **self._receive_options)
        except Exception as exc:
            self._fail(f"{self.name}: receiving stopped: {_one_line(exc)}")
        else:
            self._fail(f"{self.name}: the client stopped receiving")

    def _on_event_batch(self, context: PartitionContext, events: list[AzureEventData]) -> None:
        """``on_event_batch``: hand the batch over, wait until it is checkpointed or closed."""
        if not events:
            return
        handover = _Handover(context, events, [_convert(e, context.partition_id) for e in events])
        with self._lock:
            if self._closed:
                return
            self._streak = None
            self._outstanding.append(handover)
        self._queue.put(handover)
        handover.done.wait()

    def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        """``on_error``: one warning line; fatal on a refused credential or a long streak."""
        where = f"partition {context.partition_id}" if context is not None else "load balancing"
        message = f"{self.name}: {where}: {_one_line(error)}"
        log.warning("%s", message)
        if isinstance(error, AuthenticationError):
            self._fail(message)
            return
        now = time.monotonic()
        with self._lock:
            first, last = self._streak or (now, now)
            if now - last > _QUIET:
                first = now
            self._streak = (first, now)
        if self._error_timeout is not None and now - first >= self._error_timeout:
            self._fail(f"{message} (failing for {now - first:.0f} s)")

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._closed or self._error is not None:
                return
            self._error = EventHubClientError(message)
        self._queue.put(None)  # wake a waiting receive()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise EventHubClientError(f"{self.name}: the consumer is closed")


class AzureEventHubProducer:
    """An :class:`~aoai_helpers.eventlog.eventhub.EventProducer` on ``EventHubProducerClient``.

    ``send`` packs the bodies, in order, into as few batches as the hub's size limit allows
    (``create_batch``), then sends them one after the other (``send_batch``). A failure part
    way raises :class:`EventHubClientError` saying how many batches went out: sending again is
    safe, ingest drops the duplicates (unique ``RequestId``).
    """

    def __init__(
        self, client: BatchingClient, *, name: str = "Event Hubs", partition_key: str | None = None
    ) -> None:
        self.name = name
        self._client = client
        self._partition_key = partition_key
        self._lock = threading.Lock()

    @classmethod
    def from_spec(
        cls,
        spec: Spec,
        credential: Any = None,
        connection_string: str | None = None,
        *,
        partition_key: str | None = None,
    ) -> AzureEventHubProducer:
        """A producer to ``spec.event_hub``: ``connection_string`` (Send rule) or ``credential``."""
        client = _connect(EventHubProducerClient, spec, credential, connection_string)
        name = f"{_host(spec)}/{spec.event_hub.name}"
        return cls(client, name=name, partition_key=partition_key)

    def send(self, bodies: Sequence[bytes]) -> None:
        """Send ``bodies`` in order; every batch was accepted by Event Hubs when this returns."""
        payload = [bytes(body) for body in bodies]
        for index, body in enumerate(payload):
            if len(body) > MAX_EVENT_BYTES:  # refused as the local log refuses it
                raise InputError(
                    f"event {index}: body of {len(body):,} bytes exceeds the 1 MiB limit of "
                    f"Event Hubs ({MAX_EVENT_BYTES:,} bytes)"
                )
        if not payload:
            return
        with self._lock:
            batches = self._pack(payload)
            for number, batch in enumerate(batches):
                try:
                    self._client.send_batch(batch)
                except Exception as exc:
                    raise EventHubClientError(
                        f"{self.name}: sent {number} of {len(batches)} batches, then failed: "
                        f"{_one_line(exc)}"
                    ) from exc

    def _pack(self, payload: list[bytes]) -> list[EventDataBatch]:
        """All the batches first, so that an event too large for any batch sends nothing."""
        batches: list[EventDataBatch] = []
        for index, body in enumerate(payload):
            for fresh in (False, True):
                if fresh or not batches:
                    batches.append(self._client.create_batch(partition_key=self._partition_key))
                try:
                    batches[-1].add(AzureEventData(body))
                    break
                except ValueError:
                    if len(batches[-1]) == 0:
                        raise InputError(
                            f"event {index}: body of {len(body):,} bytes does not fit in a batch "
                            f"of {self.name} (at most {batches[-1].max_size_in_bytes:,} bytes "
                            "with its AMQP envelope)"
                        ) from None
        return batches

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_Client = TypeVar("_Client", EventHubConsumerClient, EventHubProducerClient)


def _host(spec: Spec) -> str:
    return get_cloud(spec.cloud).eventhub_host(spec.event_hub.namespace)


def _connect(
    cls: type[_Client],
    spec: Spec,
    credential: Any,
    connection_string: str | None,
    **kwargs: Any,
) -> _Client:
    """A client of ``spec.event_hub``: by connection string, else by (default) credential."""
    hub = spec.event_hub.name
    try:
        if connection_string:
            return cls.from_connection_string(connection_string, eventhub_name=hub, **kwargs)
        if credential is None:
            credential = default_credential(get_cloud(spec.cloud))
        return cls(
            fully_qualified_namespace=_host(spec),
            eventhub_name=hub,
            credential=credential,
            **kwargs,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot set up the {cls.__name__}: {_one_line(exc)}") from None
