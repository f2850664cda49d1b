"""The event log between the gateway and ingest, in one import: the interface
(:mod:`.protocol`) and the local implementation (:mod:`.local`, its format :mod:`.logfile`);
Azure Event Hubs is :mod:`.azure`.

Delivery is **at least once**, and the order is **store, then checkpoint** (see
:mod:`.protocol`). Imports :mod:`.protocol`, :mod:`.logfile` and :mod:`.local`.
"""

from __future__ import annotations

from aoai_helpers.eventlog.local import LocalConsumer, LocalEventLog, LocalProducer
from aoai_helpers.eventlog.logfile import HEADER_SIZE, DamagedRegion, read_damaged
from aoai_helpers.eventlog.protocol import MAX_EVENT_BYTES, EventConsumer, EventData, EventProducer

__all__ = [
    "HEADER_SIZE",
    "MAX_EVENT_BYTES",
    "DamagedRegion",
    "EventConsumer",
    "EventData",
    "EventProducer",
    "LocalConsumer",
    "LocalEventLog",
    "LocalProducer",
    "read_damaged",
]
