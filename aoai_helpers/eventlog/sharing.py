"""Several consumers of one group sharing a local event log: partition ownership and load
balancing (:class:`LocalGroupConsumer`, what :meth:`.local.LocalEventLog.consumer` returns).
Imports :mod:`.protocol`, :mod:`.logfile` and the top level (:mod:`.local` imports this: the
log and its partition readers are seen through :class:`PartitionedLog` and
:class:`PartitionReader`).

What ``EventHubConsumerClient`` with a checkpoint store does on Event Hubs, done with
``fcntl.flock`` on files in ``<directory>/consumers/<group>/`` (POSIX only):

* **Members.** Each consumer holds an exclusive lock on ``members/<id>.member`` for as long as it
  is open (created under a temporary name, locked, then renamed: never seen unlocked). A member
  file whose lock can be taken belongs to a consumer that is gone: it is removed. The ids start
  with the time the consumer joined, so the members sorted are in the order they came.
* **Owners.** A consumer reads a partition only while it holds the exclusive lock on
  ``partition-<k>.lock``. The kernel drops the locks of a process that dies, so a crashed
  consumer's partitions are free at once (no expiry to wait for, unlike Event Hubs' 60 s).
* **Balance.** Every ``balance_interval`` seconds (and on the first ``receive``) a consumer lists
  the live members and the partitions; member *i* of *n* is due partitions ``i, i + n, i + 2n …``.
  It releases partitions it is not due — only once every event it returned from one is
  checkpointed — and tries to claim the ones it is due at each ``receive``. A partition changes
  hands only between two of its batches: the new owner resumes from the checkpoint the old one
  wrote after storing, so each event is stored once; a crash between store and checkpoint
  redelivers the batch, which ingest (unique ``RequestId``) stores nothing of twice.
* **Idle.** ``receive`` returns ``[]`` after ``max_wait`` seconds without events in the partitions
  it owns — but not while a partition it is due is still being handed over by another member
  (up to ``handover_timeout`` s), and not while a partition nobody holds has events that are not
  checkpointed (it claims it): when every consumer of a ``consume --until-idle`` run has
  stopped, every event that was in the log is stored and checkpointed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from pathlib import Path
from typing import Final, Protocol, Self

from aoai_helpers.eventlog.logfile import POLL_INTERVAL, DamagedRegion, open_private, private_dir
from aoai_helpers.eventlog.protocol import EventData
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = [
    "BALANCE_INTERVAL",
    "HANDOVER_TIMEOUT",
    "OWNERS_DIR",
    "LocalGroupConsumer",
    "PartitionReader",
    "PartitionedLog",
]

OWNERS_DIR: Final = "consumers"  # <directory>/consumers/<group>/{members/,partition-<k>.lock}
BALANCE_INTERVAL: Final = 0.25  # s between looks at the members (Event Hubs' SDK: 10 s)
HANDOVER_TIMEOUT: Final = 5.0  # s an idle receive waits for a partition being handed over


class PartitionReader(Protocol):
    """One partition's reader, from after its checkpoint (:class:`.local.LocalConsumer`)."""

    skipped: list[DamagedRegion]

    def receive(self, max_events: int, max_wait: float) -> list[EventData]: ...
    def checkpoint(self, event: EventData) -> None: ...
    def close(self) -> None: ...


class PartitionedLog(Protocol):
    """What the group consumer needs of its log (:class:`.local.LocalEventLog`)."""

    directory: Path

    def partition_ids(self) -> list[str]: ...
    def partition_consumer(self, partition: str, group: str = ...) -> PartitionReader: ...
    def checkpoint_path(self, group: str, partition: str = ...) -> Path: ...
    def checkpoint_of(self, group: str = ..., partition: str = ...) -> int: ...
    def last_sequence_number(self, partition: str = ...) -> int: ...


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _Members:
    """This consumer's membership of its group, and the group's live members."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self.id = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = directory / f".{self.id}.tmp"
        self._fd: int | None = open_private(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # a new file: never blocks
        self._path = directory / f"{self.id}.member"
        os.replace(tmp, self._path)

    def live(self) -> list[str]:
        """The ids of the members whose consumer is open, this one included, sorted."""
        out = {self.id}
        for path in self._dir.glob("*.member"):
            if path.stem == self.id:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not _try_lock(fd):
                    out.add(path.stem)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its consumer is gone
            finally:
                os.close(fd)
        return sorted(out)

    def leave(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            os.close(self._fd)
            self._fd = None


class LocalGroupConsumer:
    """An :class:`~aoai_helpers.eventlog.protocol.EventConsumer` of one group of a
    :class:`~aoai_helpers.eventlog.local.LocalEventLog` (``log``) that shares the log's partitions with the
    group's other consumers, in this process or others (see the module docstring).

    ``receive`` returns events of one partition at a time (round robin over those it owns), as
    Event Hubs' consumer does; ``checkpoint`` writes that partition's checkpoint. Damaged regions
    it skipped are listed in :attr:`skipped`.
    """

    def __init__(
        self,
        log: PartitionedLog,
        group: str = "$Default",
        *,
        balance_interval: float = BALANCE_INTERVAL,
        handover_timeout: float = HANDOVER_TIMEOUT,
    ) -> None:
        log.checkpoint_path(group)  # the group's name is checked
        self._log = log
        self._group = group
        self._interval = balance_interval
        self._handover_timeout = handover_timeout
        self._dir = log.directory / OWNERS_DIR / group
        try:
            for directory in (self._dir.parent, self._dir, self._dir / "members"):
                private_dir(directory)
        except OSError as exc:
            raise ConfigError(f"cannot create {self._dir}: {exc.strerror or exc}") from None
        self._members: _Members | None = _Members(self._dir / "members")
        self._locks: dict[str, int] = {}  # partition → its open lock file
        self._owned: dict[str, PartitionReader] = {}
        self._pending: dict[str, int] = {}  # partition → last sequence returned, not checkpointed
        self._due: set[str] = set()
        self._due_since = time.monotonic()  # when the partitions due last changed
        self._next_balance = 0.0
        self._turn = 0  # round robin over the owned partitions
        self._released_skipped: list[DamagedRegion] = []

    @property
    def name(self) -> str:
        return f"local event log {self._log.directory} ({self._group})"

    @property
    def owned(self) -> list[str]:
        """The partitions this consumer holds now, in order."""
        return sorted(self._owned, key=int)

    @property
    def skipped(self) -> list[DamagedRegion]:
        """The damaged regions this consumer skipped, partition by partition."""
        return self._released_skipped + [r for p in self.owned for r in self._owned[p].skipped]

    # ------------------------------------------------------------------------- the protocol

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        """Up to ``max_events`` new events of one owned partition; ``[]`` after ``max_wait`` s
        without any (longer while a partition due to this consumer is being handed over)."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        deadline = time.monotonic() + max(0.0, max_wait)
        while True:
            self._balance()
            events = self._read(max_events)
            if events:
                return events
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0 and not self._handing_over(now) and not self._claim_orphans():
                return []
            time.sleep(min(POLL_INTERVAL, remaining) if remaining > 0 else POLL_INTERVAL)

    def checkpoint(self, event: EventData) -> None:
        """Record ``event`` as the last one done in its partition (which this consumer owns)."""
        consumer = self._owned.get(event.partition_id)
        if consumer is None:
            raise ValueError(
                f"event {event.sequence_number} (partition {event.partition_id!r}, offset "
                f"{event.offset!r}) was not received from {self._log.directory} by this "
                "consumer (it does not own that partition)"
            )
        consumer.checkpoint(event)
        if self._pending.get(event.partition_id, -1) <= event.sequence_number:
            self._pending.pop(event.partition_id, None)

    def close(self) -> None:
        """Release every partition and leave the group (idempotent); events returned but not
        checkpointed are delivered again to the partition's next owner."""
        for partition in list(self._owned):
            self._release(partition)
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        if self._members is not None:
            self._members.leave()
            self._members = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------- ownership

    def _balance(self) -> None:
        """Every ``balance_interval`` s: the partitions due, releasing the others once they are
        checkpointed; every time: try to claim the due partitions not held yet."""
        if self._members is None:
            raise InputError(f"the consumer of {self._log.directory} is closed")
        now = time.monotonic()
        if now >= self._next_balance:
            self._next_balance = now + self._interval
            members = self._members.live()
            n, i = len(members), members.index(self._members.id)
            due = {p for k, p in enumerate(self._log.partition_ids()) if k % n == i}
            if due != self._due:
                self._due, self._due_since = due, now
            for partition in list(self._owned):
                if partition not in due and partition not in self._pending:
                    self._release(partition)
        for partition in sorted(self._due - self._owned.keys(), key=int):
            if self._lock(partition):
                self._own(partition)

    def _handing_over(self, now: float) -> bool:
        """A partition due to this consumer is still held by another (for a while)."""
        return (
            bool(self._due - self._owned.keys()) and now - self._due_since < self._handover_timeout
        )

    def _claim_orphans(self) -> bool:
        """Claim the partitions nobody holds that have events not checkpointed; any claimed?"""
        claimed = False
        for partition in self._log.partition_ids():
            if partition in self._owned or not self._lock(partition):
                continue
            if self._log.checkpoint_of(self._group, partition) < self._log.last_sequence_number(
                partition
            ):
                self._own(partition)
                claimed = True
            else:
                fcntl.flock(self._locks[partition], fcntl.LOCK_UN)
        return claimed

    def _lock(self, partition: str) -> bool:
        fd = self._locks.get(partition)
        if fd is None:
            fd = open_private(self._dir / f"partition-{partition}.lock", os.O_RDWR | os.O_CREAT)
            self._locks[partition] = fd
        return _try_lock(fd)

    def _own(self, partition: str) -> None:
        """Read ``partition`` (its lock held) from after its checkpoint."""
        try:
            self._owned[partition] = self._log.partition_consumer(partition, self._group)
        except BaseException:
            fcntl.flock(self._locks[partition], fcntl.LOCK_UN)
            raise

    def _release(self, partition: str) -> None:
        consumer = self._owned.pop(partition)
        self._pending.pop(partition, None)
        self._released_skipped.extend(consumer.skipped)
        consumer.close()
        fcntl.flock(self._locks[partition], fcntl.LOCK_UN)

    def _read(self, max_events: int) -> list[EventData]:
        owned = self.owned
        for k in range(len(owned)):
            partition = owned[(self._turn + k) % len(owned)]
            events = self._owned[partition].receive(max_events, 0)
            if events:
                self._turn = (self._turn + k + 1) % len(owned)
                self._pending[partition] = events[-1].sequence_number
                return events
        return []
