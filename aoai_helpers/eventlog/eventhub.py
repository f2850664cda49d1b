"""The event log between the gateway and ingest, in one import: the interface
(:mod:`.protocol`) and the local implementation (:mod:`.local`, its format :mod:`.logfile`, its
consumers sharing partitions :mod:`.sharing`);
Azure Event Hubs is :mod:`.azure`.

Delivery is **at least once**, and the order is **store, then checkpoint** (see
:mod:`.protocol`). Imports :mod:`.protocol`, :mod:`.logfile`, :mod:`.local` and :mod:`.sharing`.
"""

from __future__ import annotations

from aoai_helpers.eventlog.local import (
    LocalConsumer,
    LocalEventLog,
    LocalProducer,
    SpreadingProducer,
)
from aoai_helpers.eventlog.logfile import HEADER_SIZE, DamagedRegion, read_damaged
from aoai_helpers.eventlog.protocol import MAX_EVENT_BYTES, EventConsumer, EventData, EventProducer
from aoai_helpers.eventlog.sharing import LocalGroupConsumer

__all__ = [
    "HEADER_SIZE",
    "MAX_EVENT_BYTES",
    "DamagedRegion",
    "EventConsumer",
    "EventData",
    "EventProducer",
    "LocalConsumer",
    "LocalEventLog",
    "LocalGroupConsumer",
    "LocalProducer",
    "SpreadingProducer",
    "read_damaged",
]
