"""The local event log (:class:`LocalEventLog`): a durable append-only file that local mode uses in
place of Event Hubs, so that ingest cannot tell them apart. The format is :mod:`.logfile`'s.
Imports :mod:`.protocol`, :mod:`.logfile`, :mod:`.sharing` and the top level.

Producers, in any number of processes, append under ``fcntl.flock`` on ``events.log`` (POSIX
only): each reads the log's valid end and last sequence number under the lock, then writes
all the records of one ``send`` with one write and, if ``fsync``, one fsync. A crash mid-append
leaves a *torn tail* (data after the last valid record that no valid record follows: a short
record, or a bad CRC): readers stop before it, and the next producer truncates it (under the
lock) before appending — records before it are never touched.

Invalid data *followed by a valid record* is damage (a flipped byte, a bad sector), not a torn
tail: readers skip it. From the first byte that is not the expected record they look for the
next valid one — ``EVT1``, a length within the limit, a CRC that matches, and a sequence number
not below the expected one — and take up there (its own sequence number is then the expected
one: the numbers in between are lost). The log itself is never changed: the region is copied
aside once (``damaged/``, with its offset and the sequence numbers around it; several groups
or a restart find it already there), a consumer logs one warning line for each region it
skips and lists them (:attr:`LocalConsumer.skipped`, :meth:`LocalEventLog.damaged`), and
offsets, sequence numbers and checkpoints go on as before: every valid record after the damage
is delivered once, in order, and a checkpoint after it resumes after it. Producers skip damage
the same way to find the log's end; only a torn tail is ever truncated.

Consumers do not lock the log: they read from a remembered byte offset (never from the start
again) and poll for new records.

Partitions: a log made with ``partitions=N`` has N such files, partition ``"0"`` in the
directory itself (the one-partition layout) and partition ``"k"`` in ``partitions/k/`` (its own
``events.log``, ``checkpoints/`` and ``damaged/``). A producer appends each ``send`` to one
partition, round robin from a random one (Event Hubs without a partition key); order holds
within a partition. Partitions can be added (``partitions=`` larger than what exists), never
removed. :meth:`LocalEventLog.consumer` returns a consumer that claims partitions of its group
and shares them with the group's other consumers, in any process (:mod:`.sharing`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Self

from aoai_helpers import clock
from aoai_helpers.eventlog.logfile import (
    CRC_FIELDS,
    DAMAGED_DIR,
    FILE_MAGIC,
    FIRST_RECORD,
    GROUP_NAME,
    HEADER_SIZE,
    LOG_NAME,
    POLL_INTERVAL,
    RECORD_HEADER,
    RECORD_MAGIC,
    DamagedRegion,
    check_body,
    damaged_file,
    fsync_dir,
    locked,
    open_private,
    private_dir,
    read_checkpoint,
    read_damaged,
    save_damaged,
    scan_log,
    tighten,
    write_all,
    write_checkpoint,
)
from aoai_helpers.eventlog.protocol import EventData
from aoai_helpers.eventlog.sharing import LocalGroupConsumer
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = ["PARTITIONS_DIR", "LocalConsumer", "LocalEventLog", "LocalProducer", "SpreadingProducer"]

PARTITIONS_DIR: Final = "partitions"  # partition k > 0 lives in <directory>/partitions/k/


#: the logger's name as before the event log had its own modules (what log settings name)
log = logging.getLogger("aoai_helpers.eventlog.eventhub")


class _Closing:
    """``with`` support for producers and consumers: ``close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalProducer(_Closing):
    """Appends to a :class:`LocalEventLog` (safe across threads and processes)."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self._path = path
        self._fsync = fsync
        self._fd: int | None = open_private(path, os.O_RDWR)
        self._end, self._last = FIRST_RECORD, -1  # valid end and last sequence number, as last seen
        self._lock = threading.Lock()

    def send(self, bodies: Sequence[bytes]) -> None:
        """Append ``bodies`` as consecutive records, with one write and (if ``fsync``) one fsync."""
        payload = [check_body(body, i) for i, body in enumerate(bodies)]
        if not payload:
            return
        with self._lock:
            if self._fd is None:
                raise InputError(f"the producer of {self._path} is closed")
            fd = self._fd
            with locked(fd):
                end, last = self._valid_end(fd)
                ms = int(clock.now().timestamp() * 1000)
                buf = bytearray()
                for seq, body in enumerate(payload, start=last + 1):
                    fields = CRC_FIELDS.pack(seq, ms, len(body))
                    crc = zlib.crc32(body, zlib.crc32(fields))
                    buf += RECORD_MAGIC + fields + crc.to_bytes(4, "little") + body
                try:
                    write_all(fd, buf, end)
                    if self._fsync:
                        os.fsync(fd)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, end)  # leave no partial append behind
                    raise InputError(
                        f"cannot append to the event log {self._path}: {exc.strerror or exc}"
                    ) from None
                self._end, self._last = end + len(buf), last + len(payload)

    def _valid_end(self, fd: int) -> tuple[int, int]:
        """Under the lock: the log's valid end and last sequence number; truncates a torn tail."""
        size = os.fstat(fd).st_size
        if size < self._end:  # cannot happen to a valid log (only torn tails are cut): re-read
            self._end, self._last = FIRST_RECORD, -1
        if size != self._end:
            scan = scan_log(fd, self._end, self._last + 1, keep=False)
            self._end, self._last = scan.end, scan.last_seq
            if scan.end < size:  # no valid record follows (damage is skipped): a torn tail
                os.ftruncate(fd, scan.end)
                if self._fsync:
                    os.fsync(fd)
                log.warning(
                    "event log %s: dropped a torn tail of %d bytes after sequence number %d",
                    self._path,
                    size - scan.end,
                    scan.last_seq,
                )
        return self._end, self._last

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SpreadingProducer(_Closing):
    """Appends each ``send`` to one partition of a partitioned log, round robin from a random one
    (what Event Hubs does with events sent without a partition key)."""

    def __init__(self, producers: Sequence[LocalProducer]) -> None:
        self._producers = list(producers)
        self._next = random.randrange(len(self._producers))
        self._lock = threading.Lock()

    def send(self, bodies: Sequence[bytes]) -> None:
        """Append ``bodies`` to the next partition, in order (one write, one fsync)."""
        with self._lock:
            producer = self._producers[self._next]
            self._next = (self._next + 1) % len(self._producers)
        producer.send(bodies)

    def close(self) -> None:
        for producer in self._producers:
            producer.close()


class LocalConsumer(_Closing):
    """Reads a :class:`LocalEventLog` for one consumer group, from after its checkpoint.

    Damaged regions it skips (see the module docstring) are copied to ``damaged/`` (once),
    logged (one warning line each) and listed in :attr:`skipped`.
    """

    def __init__(
        self, path: Path, checkpoint_path: Path, *, fsync: bool, partition_id: str = "0"
    ) -> None:
        self._path = path
        self.partition_id = partition_id
        self._checkpoint_path = checkpoint_path
        self._group = checkpoint_path.stem
        self._fsync = fsync
        #: The damaged regions this consumer skipped, in order.
        self.skipped: list[DamagedRegion] = []
        self._fd: int | None = open_private(path, os.O_RDONLY)
        try:
            self._offset, self._next_seq = self._resume(self._fd)
        except BaseException:
            self.close()
            raise

    def _resume(self, fd: int) -> tuple[int, int]:
        """Where to start: after the checkpoint (its offset checked; scanned for if it is off)."""
        checkpoint = read_checkpoint(self._checkpoint_path)
        if checkpoint is None:
            return FIRST_RECORD, 0
        seq, offset = checkpoint
        if FIRST_RECORD <= offset <= os.fstat(fd).st_size:
            head = os.pread(fd, HEADER_SIZE, offset)
            if len(head) < HEADER_SIZE or (
                head[:4] == RECORD_MAGIC and RECORD_HEADER.unpack(head)[1] == seq + 1
            ):
                return offset, seq + 1
        # Off, or damage right after the checkpoint: find record ``seq`` (damage is skipped)
        scan = scan_log(fd, FIRST_RECORD, 0, keep=False, stop_seq=seq)
        if (scan.end, scan.last_seq) != (offset, seq):
            log.warning(
                "checkpoint %s does not match %s; looking for sequence number %d",
                self._checkpoint_path,
                self._path,
                seq,
            )
        return scan.end, scan.last_seq + 1

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        """Up to ``max_events`` new events; waits (polling) up to ``max_wait`` s for the first."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        deadline = time.monotonic() + max(0.0, max_wait)
        while True:
            events = self._read(max_events)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            time.sleep(min(POLL_INTERVAL, remaining))

    def _read(self, max_events: int) -> list[EventData]:
        if self._fd is None:
            raise InputError(f"the consumer of {self._path} is closed")
        if os.fstat(self._fd).st_size <= self._offset:
            return []
        scan = scan_log(self._fd, self._offset, self._next_seq, limit=max_events)
        for region in scan.damaged:  # set aside before anything after it is handed out
            try:
                saved = save_damaged(self._fd, self._path, region, self._group, fsync=self._fsync)
                kept = f"copied to {saved}"
            except InputError as exc:
                kept = f"not copied ({exc}), still in the log"
            self.skipped.append(region)
            log.warning("event log %s: skipped %s; %s", self._path, region.describe(), kept)
        self._offset, self._next_seq = scan.end, scan.last_seq + 1
        return [
            EventData(
                body, seq, datetime.fromtimestamp(ms / 1000, UTC), self.partition_id, str(offset)
            )
            for offset, seq, ms, body in scan.records
        ]

    def checkpoint(self, event: EventData) -> None:
        """Record ``event`` as the last one done (atomic file replace; like Event Hubs' store)."""
        try:
            if event.partition_id != self.partition_id:
                raise ValueError(event.partition_id)
            next_offset = int(event.offset) + HEADER_SIZE + len(event.body)
        except ValueError:
            raise ValueError(
                f"event {event.sequence_number} (partition {event.partition_id!r}, offset "
                f"{event.offset!r}) was not received from {self._path}"
            ) from None
        write_checkpoint(
            self._checkpoint_path, event.sequence_number, next_offset, fsync=self._fsync
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _init_partition(directory: Path, fsync: bool) -> None:
    """Create (or check) one partition's ``events.log`` and ``checkpoints/`` in ``directory``."""
    path = directory / LOG_NAME
    try:
        private_dir(directory)
        private_dir(directory / "checkpoints")
    except OSError as exc:
        raise ConfigError(
            f"cannot use {directory} as an event log directory: {exc.strerror or exc}"
        ) from None
    fd = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        with locked(fd):
            head = os.pread(fd, FIRST_RECORD, 0)
            if head != FILE_MAGIC:
                if not FILE_MAGIC.startswith(head):
                    raise InputError(f"{path} is not an event log (unknown file header)")
                write_all(fd, FILE_MAGIC, 0)  # new, or its creation was cut short
                if fsync:
                    os.fsync(fd)
                    fsync_dir(directory)
    finally:
        os.close(fd)
    for checkpoint in (directory / "checkpoints").glob("*.json"):
        tighten(checkpoint)  # written 0644 by earlier versions
    if (directory / DAMAGED_DIR).is_dir():
        tighten(directory / DAMAGED_DIR)


class LocalEventLog:
    """A durable, append-only event log in ``directory``, with ``partitions`` partitions
    (``"0"``, ``"1"``, …; default: as many as exist, one for a new log).

    ``fsync=True`` makes every ``send`` and checkpoint durable before it returns (one fsync per
    ``send``, whatever the number of events); ``False`` leaves that to the OS (tests, demos).
    """

    def __init__(
        self, directory: str | Path, *, fsync: bool = True, partitions: int | None = None
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME  # partition "0"
        self.fsync = fsync
        try:
            private_dir(self.directory, parents=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.directory} as an event log directory: {exc.strerror or exc}"
            ) from None
        _init_partition(self.directory, fsync)
        existing = self._count_partitions()
        if partitions is not None and partitions < max(1, existing):
            raise ConfigError(
                f"{self.directory} has {existing} partition(s): partitions can be added, not "
                f"removed (asked for {partitions})"
            )
        wanted = existing if partitions is None else partitions
        if wanted > 1:
            try:
                private_dir(self.directory / PARTITIONS_DIR)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create {self.directory / PARTITIONS_DIR}: {exc.strerror or exc}"
                ) from None
            for k in range(1, wanted):
                _init_partition(self._partition_dir(str(k)), fsync)
        self.partitions = wanted
        self._scanned: dict[str, tuple[int, int]] = {}  # partition → cached end, last sequence
        self._lock = threading.Lock()

    def _count_partitions(self) -> int:
        n = 1
        while (self.directory / PARTITIONS_DIR / str(n) / LOG_NAME).is_file():
            n += 1
        return n

    def partition_ids(self) -> list[str]:
        """``["0", "1", …]``: the partitions that exist now (another process may have added some)."""
        self.partitions = max(self.partitions, self._count_partitions())
        return [str(k) for k in range(self.partitions)]

    def _partition_dir(self, partition: str) -> Path:
        if partition == "0":
            return self.directory
        if not partition.isdigit() or partition != str(int(partition)):
            raise ValueError(f"no partition {partition!r} in {self.directory}")
        return self.directory / PARTITIONS_DIR / partition

    def _log_path(self, partition: str) -> Path:
        path = self._partition_dir(partition) / LOG_NAME
        if partition != "0" and not path.is_file():
            raise ValueError(f"no partition {partition!r} in {self.directory}")
        return path

    def producer(self) -> LocalProducer | SpreadingProducer:
        """A producer appending to this log (give each thread or process its own, or share);
        with several partitions, each ``send`` goes to the next one (:class:`SpreadingProducer`)."""
        ids = self.partition_ids()
        if len(ids) == 1:
            return LocalProducer(self.path, fsync=self.fsync)
        return SpreadingProducer([LocalProducer(self._log_path(p), fsync=self.fsync) for p in ids])

    def consumer(self, group: str = "$Default", **options: float) -> LocalGroupConsumer:
        """A consumer of ``group``: it claims partitions, shares them with the group's other
        consumers (any process) and reads each from after its checkpoint (:mod:`.sharing`;
        ``options``: ``balance_interval``, ``handover_timeout``)."""
        return LocalGroupConsumer(self, group, **options)

    def partition_consumer(self, partition: str, group: str = "$Default") -> LocalConsumer:
        """A reader of one partition for ``group``, from after its checkpoint, claiming nothing
        (what :meth:`consumer` uses for a partition it owns)."""
        return LocalConsumer(
            self._log_path(partition),
            self.checkpoint_path(group, partition),
            fsync=self.fsync,
            partition_id=partition,
        )

    def last_sequence_number(self, partition: str = "0") -> int:
        """The sequence number of the last complete event of ``partition``, ``-1`` when empty."""
        path = self._log_path(partition)
        with self._lock:
            end, last = self._scanned.get(partition, (FIRST_RECORD, -1))
            fd = open_private(path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size < end:
                    end, last = FIRST_RECORD, -1
                scan = scan_log(fd, end, last + 1, keep=False)
                self._scanned[partition] = (scan.end, scan.last_seq)
            finally:
                os.close(fd)
            return scan.last_seq

    def damaged(self) -> list[DamagedRegion]:
        """The damaged regions consumers skipped and set aside (``damaged/`` of each partition),
        partition by partition, oldest first."""
        return [
            region
            for p in self.partition_ids()
            for region, _ in read_damaged(self._partition_dir(p))
        ]

    @property
    def damaged_path(self) -> Path:
        """The file partition ``"0"``'s damaged regions are copied to (once there was one);
        partition ``k``'s is under ``partitions/k/``."""
        return damaged_file(self.path)

    def checkpoint_of(self, group: str = "$Default", partition: str = "0") -> int:
        """The sequence number ``group`` last checkpointed in ``partition``, ``-1`` when none."""
        checkpoint = read_checkpoint(self.checkpoint_path(group, partition))
        return -1 if checkpoint is None else checkpoint[0]

    def lag(self, group: str = "$Default") -> int:
        """How many events ``group`` has not checkpointed yet, over all partitions."""
        return sum(
            max(0, self.last_sequence_number(p) - self.checkpoint_of(group, p))
            for p in self.partition_ids()
        )

    def checkpoint_path(self, group: str, partition: str = "0") -> Path:
        """``group``'s checkpoint file in ``partition`` (``ConfigError`` for a bad group name)."""
        if not GROUP_NAME.fullmatch(group):
            raise ConfigError(
                f"invalid consumer group {group!r}: use 1-64 letters, digits, '$', '.', '_' or '-'"
            )
        return self._partition_dir(partition) / "checkpoints" / f"{group}.json"

    def __repr__(self) -> str:
        return (
            f"LocalEventLog({str(self.directory)!r}, fsync={self.fsync}, "
            f"partitions={self.partitions})"
        )
