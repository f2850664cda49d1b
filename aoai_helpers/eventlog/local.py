"""The local event log (:class:`LocalEventLog`): a durable append-only file that local mode uses in
place of Event Hubs, so that ingest cannot tell them apart. The format is :mod:`.logfile`'s.
Imports :mod:`.protocol`, :mod:`.logfile` and the top level.

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

Consumers do not lock: they read from a remembered byte offset (never from the start again)
and poll for new records. One consumer per group at a time (as with Event Hubs' epoch
receivers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

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
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = ["LocalConsumer", "LocalEventLog", "LocalProducer"]


#: the logger's name as before the event log had its own modules (what log settings name)
log = logging.getLogger("aoai_helpers.eventlog.eventhub")


# ----------------------------------------------------------------------------- file helpers


# ----------------------------------------------------------------------------- damaged regions


# ----------------------------------------------------------------------------- the local log


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


class LocalConsumer(_Closing):
    """Reads a :class:`LocalEventLog` for one consumer group, from after its checkpoint.

    Damaged regions it skips (see the module docstring) are copied to ``damaged/`` (once),
    logged (one warning line each) and listed in :attr:`skipped`.
    """

    def __init__(self, path: Path, checkpoint_path: Path, *, fsync: bool) -> None:
        self._path = path
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
            EventData(body, seq, datetime.fromtimestamp(ms / 1000, UTC), "0", str(offset))
            for offset, seq, ms, body in scan.records
        ]

    def checkpoint(self, event: EventData) -> None:
        """Record ``event`` as the last one done (atomic file replace; like Event Hubs' store)."""
        try:
            if event.partition_id != "0":
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


class LocalEventLog:
    """A durable, append-only event log in ``directory`` (one partition, ``"0"``).

    ``fsync=True`` makes every ``send`` and checkpoint durable before it returns (one fsync per
    ``send``, whatever the number of events); ``False`` leaves that to the OS (tests, demos).
    """

    def __init__(self, directory: str | Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self.fsync = fsync
        try:
            private_dir(self.directory, parents=True)
            private_dir(self.directory / "checkpoints")
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.directory} as an event log directory: {exc.strerror or exc}"
            ) from None
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            with locked(fd):
                head = os.pread(fd, FIRST_RECORD, 0)
                if head != FILE_MAGIC:
                    if not FILE_MAGIC.startswith(head):
                        raise InputError(f"{self.path} is not an event log (unknown file header)")
                    write_all(fd, FILE_MAGIC, 0)  # new, or its creation was cut short
                    if fsync:
                        os.fsync(fd)
                        fsync_dir(self.directory)
        finally:
            os.close(fd)
        for checkpoint in (self.directory / "checkpoints").glob("*.json"):
            tighten(checkpoint)  # written 0644 by earlier versions
        if (self.directory / DAMAGED_DIR).is_dir():
            tighten(self.directory / DAMAGED_DIR)
        self._end, self._last = FIRST_RECORD, -1  # cached scan position for last_sequence_number
        self._lock = threading.Lock()

    def producer(self) -> LocalProducer:
        """A producer appending to this log (give each thread or process its own, or share)."""
        return LocalProducer(self.path, fsync=self.fsync)

    def consumer(self, group: str = "$Default") -> LocalConsumer:
        """A consumer of ``group``, starting after the group's checkpoint."""
        return LocalConsumer(self.path, self._checkpoint_path(group), fsync=self.fsync)

    def last_sequence_number(self) -> int:
        """The sequence number of the last complete event, ``-1`` when the log is empty."""
        with self._lock:
            fd = open_private(self.path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size < self._end:
                    self._end, self._last = FIRST_RECORD, -1
                scan = scan_log(fd, self._end, self._last + 1, keep=False)
                self._end, self._last = scan.end, scan.last_seq
            finally:
                os.close(fd)
            return self._last

    def damaged(self) -> list[DamagedRegion]:
        """The damaged regions consumers skipped and set aside (``damaged/``), oldest first."""
        return [region for region, _ in read_damaged(self.directory)]

    @property
    def damaged_path(self) -> Path:
        """The file damaged regions are copied to (it exists once there was one)."""
        return damaged_file(self.path)

    def checkpoint_of(self, group: str = "$Default") -> int:
        """The sequence number ``group`` last checkpointed, ``-1`` when none."""
        checkpoint = read_checkpoint(self._checkpoint_path(group))
        return -1 if checkpoint is None else checkpoint[0]

    def lag(self, group: str = "$Default") -> int:
        """How many events ``group`` has not checkpointed yet."""
        return max(0, self.last_sequence_number() - self.checkpoint_of(group))

    def _checkpoint_path(self, group: str) -> Path:
        if not GROUP_NAME.fullmatch(group):
            raise ConfigError(
                f"invalid consumer group {group!r}: use 1-64 letters, digits, '$', '.', '_' or '-'"
            )
        return self.directory / "checkpoints" / f"{group}.json"

    def __repr__(self) -> str:
        return f"LocalEventLog({str(self.directory)!r}, fsync={self.fsync})"
