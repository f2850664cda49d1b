"""What ingest code sees of the event log: :class:`EventData`, :class:`EventProducer` and
:class:`EventConsumer`. Imports nothing of the package.

The event log between the gateway and ingest: one small interface (here), two
implementations (:mod:`.local`, :mod:`.azure`).

:class:`EventProducer` and :class:`EventConsumer` are all ingest code sees. Azure Event Hubs
implements them with ``EventHubProducerClient.send_batch`` (bodies packed into batches under
the hub's size limit) and ``EventHubConsumerClient`` with a checkpoint store; local mode uses
:class:`LocalEventLog`, a durable append-only file, so that ingest cannot tell them apart.

Delivery is **at least once**, and the order is **store, then checkpoint**: a consumer stores
a batch (one database transaction), and only then checkpoints its last event. A crash between
the two redelivers the batch after a restart; ingest is idempotent on ``RequestId``, so the
redelivery stores nothing twice. Events received but not checkpointed are delivered again to
the next consumer of the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

__all__ = [
    "MAX_EVENT_BYTES",
    "EventConsumer",
    "EventData",
    "EventProducer",
]

MAX_EVENT_BYTES: Final = 1024 * 1024  # Event Hubs' largest event (standard tier and above)


@dataclass(frozen=True, slots=True)
class EventData:
    """One received event. ``offset`` is where it sits in its partition (implementation's own)."""

    body: bytes
    sequence_number: int
    enqueued_time: datetime  # UTC
    partition_id: str = "0"
    offset: str = ""


@runtime_checkable
class EventProducer(Protocol):
    """Sends event bodies to the log (Event Hubs: ``EventHubProducerClient.send_batch``)."""

    def send(self, bodies: Sequence[bytes]) -> None: ...  # in order; durable on return
    def close(self) -> None: ...


@runtime_checkable
class EventConsumer(Protocol):
    """Receives events of one consumer group (Event Hubs: ``EventHubConsumerClient`` + store)."""

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        """Up to ``max_events`` events after the checkpoint and after those already returned.

        Returns as soon as at least one event is available, or ``[]`` after ``max_wait``
        seconds.
        """

    def checkpoint(self, event: EventData) -> None:
        """Mark everything up to and including ``event`` (in its partition) as done."""

    def close(self) -> None: ...
