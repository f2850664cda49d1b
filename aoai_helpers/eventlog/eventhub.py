"""The event log between the gateway and ingest: one small interface, two implementations.

:class:`EventProducer` and :class:`EventConsumer` are all ingest code sees. Azure Event Hubs
implements them with ``EventHubProducerClient.send_batch`` (bodies packed into batches under
the hub's size limit) and ``EventHubConsumerClient`` with a checkpoint store; local mode uses
:class:`LocalEventLog`, a durable append-only file, so that ingest cannot tell them apart.

Delivery is **at least once**, and the order is **store, then checkpoint**: a consumer stores
a batch (one database transaction), and only then checkpoints its last event. A crash between
the two redelivers the batch after a restart; ingest is idempotent on ``RequestId``, so the
redelivery stores nothing twice. Events received but not checkpointed are delivered again to
the next consumer of the group.

Local event log — ``<directory>/``
----------------------------------
``events.log``: an 8-byte file header ``b"AOAIEVL1"``, then records, each::

    magic            4 bytes   b"EVT1"
    sequence_number  u64 LE    0, 1, 2, … (each record is the previous one + 1)
    enqueued_ms      i64 LE    milliseconds since the Unix epoch (UTC) when it was sent
    length           u32 LE    body length, at most 1 MiB (Event Hubs' limit)
    crc32            u32 LE    zlib.crc32 of the 20 bytes sequence_number..length, then the body
    body             ``length`` bytes

``checkpoints/<group>.json``: ``{"sequence_number": n, "next_offset": b, "updated_utc": …}``
(``next_offset`` is the byte offset of the record after ``n``), replaced atomically (temp file,
fsync, ``os.replace``).

``damaged/events.log.damaged``: copies of damaged regions (below), each a JSON line
``{"offset": …, "length": …, "after_sequence": …, "next_sequence": …, "found_utc": …,
"found_by": group}`` followed by the ``length`` raw bytes and a newline.

The log holds request text: its directory, ``checkpoints/`` and ``damaged/`` are created
``0700`` and every file ``0600`` (an existing one is tightened when it is opened, if ours).

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
import fcntl
import json
import logging
import os
import re
import stat
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, Self, runtime_checkable

from aoai_helpers import clock
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = [
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

MAX_EVENT_BYTES: Final = 1024 * 1024  # Event Hubs' largest event (standard tier and above)
FILE_MAGIC: Final = b"AOAIEVL1"
RECORD_MAGIC: Final = b"EVT1"
_HEADER: Final = struct.Struct("<4sQqII")  # magic, sequence number, enqueued ms, length, crc32
_FIELDS: Final = struct.Struct("<QqI")  # the part of the header the CRC covers
HEADER_SIZE: Final = _HEADER.size  # 28
_START: Final = len(FILE_MAGIC)  # offset of the first record
_CHUNK: Final = 1 << 20  # bytes read at a time
POLL_INTERVAL: Final = 0.025  # seconds between looks at the file while waiting
LOG_NAME: Final = "events.log"
DAMAGED_DIR: Final = "damaged"
DAMAGED_NAME: Final = f"{LOG_NAME}.damaged"
_FILE_MODE: Final = 0o600  # the log holds request text: owner only
_DIR_MODE: Final = 0o700
_GROUP: Final = re.compile(r"[A-Za-z0-9$][A-Za-z0-9$._-]{0,63}")

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------- file helpers


def _open(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise InputError(f"cannot open the event log {path}: {exc.strerror or exc}") from None
    _tighten(fd)
    return fd


def _tighten(fd_or_path: int | Path) -> None:
    """Drop group and other permissions from a file or directory of ours (others' are left)."""
    with contextlib.suppress(OSError):
        st = os.stat(fd_or_path)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(fd_or_path, stat.S_IMODE(st.st_mode) & 0o700)


def _private_dir(path: Path, *, parents: bool = False) -> None:
    """``mkdir`` with mode 0700 (tightened if it exists); ``OSError`` if it cannot be made."""
    path.mkdir(mode=_DIR_MODE, parents=parents, exist_ok=True)
    _tighten(path)


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class DamagedRegion:
    """Bytes of the log between two valid records that are not a valid record: skipped.

    ``length`` 0: no bytes, only sequence numbers missing (``next_sequence`` jumps ahead).
    """

    offset: int  # where the region starts in events.log
    length: int  # its bytes
    after_sequence: int  # the last valid record before it (-1: none)
    next_sequence: int  # the valid record after it

    @property
    def lost(self) -> int:
        """How many sequence numbers the region took (at least 0)."""
        return max(0, self.next_sequence - self.after_sequence - 1)

    def describe(self) -> str:
        """One line, e.g. ``100 damaged bytes at byte 8160 (after sequence number 4; the
        next valid record is 6: 1 event lost)``."""
        return (
            f"{self.length} damaged bytes at byte {self.offset} (after sequence number "
            f"{self.after_sequence}; the next valid record is {self.next_sequence}: "
            f"{self.lost} event(s) lost)"
        )


@dataclass(slots=True)
class _Scan:
    """Valid records read from ``start``: (offset, sequence, ms, body); where it stopped."""

    records: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    end: int = 0  # offset after the last valid record (``start`` if none)
    last_seq: int = -1  # its sequence number (``expect - 1`` if none)
    damaged: list[DamagedRegion] = field(default_factory=list)  # skipped on the way


class _Window:
    """Buffered reads of a file of ``size`` bytes (one ``pread`` per MiB, not per record)."""

    __slots__ = ("at", "buf", "fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.buf, self.at = fd, size, b"", 0

    def get(self, pos: int, n: int) -> memoryview | None:
        """The ``n`` bytes at ``pos``; ``None`` when the file ends before them."""
        if pos + n > self.size:
            return None
        rel = pos - self.at
        if rel < 0 or rel + n > len(self.buf):
            self.buf, self.at, rel = (
                os.pread(self.fd, min(max(_CHUNK, n), self.size - pos), pos),
                pos,
                0,
            )
            if len(self.buf) < n:
                return None
        return memoryview(self.buf)[rel : rel + n]


#: What :func:`_record_at` finds where no complete valid record is.
_INCOMPLETE: Final = "incomplete"  # the file ends inside it (an append in progress, a torn tail)
_INVALID: Final = "invalid"  # complete data that is no valid record


def _record_at(win: _Window, pos: int) -> tuple[int, int, memoryview, int] | str:
    """``(sequence, ms, body, record size)`` of the valid record at ``pos``, or why not."""
    head = win.get(pos, HEADER_SIZE)
    if head is None:
        return _INCOMPLETE
    magic, seq, ms, length, crc = _HEADER.unpack(head)
    if magic != RECORD_MAGIC or length > MAX_EVENT_BYTES:
        return _INVALID
    total = HEADER_SIZE + length
    record = win.get(pos, total)
    if record is None:
        return _INCOMPLETE
    body = record[HEADER_SIZE:]
    if zlib.crc32(body, zlib.crc32(record[4:24])) != crc:
        return _INVALID
    return seq, ms, body, total


def _next_record(fd: int, size: int, start: int, expect: int) -> tuple[int, int] | None:
    """``(offset, sequence)`` of the first complete valid record at or after ``start`` whose
    sequence number is ``expect`` or later; ``None`` if there is none (yet)."""
    win = _Window(fd, size)
    pos = start
    while pos < size:
        chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
        i = chunk.find(RECORD_MAGIC)
        while i >= 0:
            found = _record_at(win, pos + i)
            if not isinstance(found, str) and found[0] >= expect:
                return pos + i, found[0]
            i = chunk.find(RECORD_MAGIC, i + 1)
        if pos + len(chunk) >= size:
            break
        pos += len(chunk) - (len(RECORD_MAGIC) - 1)  # a magic split across chunks
    return None


def _scan(
    fd: int,
    start: int,
    expect: int,
    *,
    limit: int = sys.maxsize,
    keep: bool = True,
    stop_seq: int | None = None,
) -> _Scan:
    """Read valid records from ``start``, the first one numbered ``expect``.

    Stops after ``limit`` records, after record ``stop_seq``, at the end of the file, or where
    no valid record follows (an append in progress, or a torn tail). Damage followed by a valid
    record is skipped and listed in ``damaged`` — with ``stop_seq``, only damage that ends
    before a record numbered ``stop_seq`` or less; otherwise the scan stops in front of it.
    """
    size = os.fstat(fd).st_size
    out = _Scan(end=start, last_seq=expect - 1)
    win = _Window(fd, size)
    pos = start
    while len(out.records) < limit and pos < size and out.last_seq != stop_seq:
        found = _record_at(win, pos)
        if not isinstance(found, str) and found[0] == expect:
            seq, ms, body, total = found
            if keep:
                out.records.append((pos, seq, ms, bytes(body)))
            pos += total
            expect += 1
            out.end, out.last_seq = pos, seq
            continue
        after = _next_record(fd, size, pos, expect)
        if after is None:
            break  # a torn tail, or an append still being written
        offset, seq = after
        if stop_seq is not None and seq > stop_seq:
            break
        out.damaged.append(DamagedRegion(pos, offset - pos, expect - 1, seq))
        pos, expect = offset, seq
    return out


def _check_body(body: bytes, index: int) -> bytes:
    data = bytes(body)
    if len(data) > MAX_EVENT_BYTES:
        raise InputError(
            f"event {index}: body of {len(data):,} bytes exceeds the 1 MiB limit of Event Hubs "
            f"({MAX_EVENT_BYTES:,} bytes)"
        )
    return data


def _read_checkpoint(path: Path) -> tuple[int, int] | None:
    """``(sequence_number, next_offset)`` of a checkpoint file, ``None`` if there is none."""
    try:
        data = json.loads(path.read_bytes())
        seq, offset = data["sequence_number"], data["next_offset"]
        if not (isinstance(seq, int) and isinstance(offset, int)):
            raise TypeError("sequence_number and next_offset must be integers")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"the checkpoint {path} is unreadable: {exc}") from None
    return seq, offset


def _write_checkpoint(path: Path, seq: int, next_offset: int, *, fsync: bool) -> None:
    """Replace the checkpoint file atomically (temp file, fsync, ``os.replace``)."""
    stamp = clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = json.dumps({"sequence_number": seq, "next_offset": next_offset, "updated_utc": stamp})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
        try:
            _write_all(fd, data.encode("utf-8"), 0)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot write the checkpoint {path}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------- damaged regions


def _damaged_path(log_path: Path) -> Path:
    return log_path.parent / DAMAGED_DIR / DAMAGED_NAME


def _damaged_entries(fd: int) -> Iterator[dict[str, object]]:
    """The JSON headers of the damaged file's entries (stops at anything unreadable)."""
    size, pos = os.fstat(fd).st_size, 0
    while pos < size:
        line = os.pread(fd, 4096, pos).split(b"\n", 1)[0]
        try:
            entry = json.loads(line)
            length = int(entry["length"])
        except (ValueError, KeyError, TypeError):
            return
        yield entry
        pos += len(line) + 1 + length + 1


def _save_damaged(
    fd: int, log_path: Path, region: DamagedRegion, group: str, *, fsync: bool
) -> Path:
    """Append ``region``'s bytes to the damaged file unless they are there already; its path.

    Raises :class:`InputError` if they cannot be set aside (they are still in the log, which
    is never changed: the caller says so and goes on).
    """
    path = _damaged_path(log_path)
    try:
        _private_dir(path.parent)
        out = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise InputError(
            f"cannot set the damaged region aside in {path}: {exc.strerror or exc}"
        ) from None
    try:
        _tighten(out)
        with _locked(out):
            known = {(e.get("offset"), e.get("length")) for e in _damaged_entries(out)}
            if (region.offset, region.length) in known:
                return path
            stamp = clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
            header = {
                "offset": region.offset,
                "length": region.length,
                "after_sequence": region.after_sequence,
                "next_sequence": region.next_sequence,
                "found_utc": stamp,
                "found_by": group,
            }
            data = bytearray(json.dumps(header).encode("utf-8") + b"\n")
            at = region.offset
            while at < region.offset + region.length:
                chunk = os.pread(fd, min(_CHUNK, region.offset + region.length - at), at)
                if not chunk:
                    break
                data += chunk
                at += len(chunk)
            data += b"\n"
            _write_all(out, data, os.fstat(out).st_size)
            if fsync:
                os.fsync(out)
    except OSError as exc:
        raise InputError(
            f"cannot set the damaged region aside in {path}: {exc.strerror or exc}"
        ) from None
    finally:
        os.close(out)
    return path


def read_damaged(directory: str | Path) -> list[tuple[DamagedRegion, bytes]]:
    """The regions set aside in ``directory``'s damaged file, with their bytes (oldest first)."""
    path = Path(directory) / DAMAGED_DIR / DAMAGED_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    out: list[tuple[DamagedRegion, bytes]] = []
    pos = 0
    while pos < len(data):
        line, sep, _ = data[pos:].partition(b"\n")
        try:
            e = json.loads(line)
            region = DamagedRegion(
                int(e["offset"]),
                int(e["length"]),
                int(e["after_sequence"]),
                int(e["next_sequence"]),
            )
        except (ValueError, KeyError, TypeError):
            break
        start = pos + len(line) + len(sep)
        out.append((region, data[start : start + region.length]))
        pos = start + region.length + 1
    return out


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
        self._fd: int | None = _open(path, os.O_RDWR)
        self._end, self._last = _START, -1  # valid end and last sequence number, as last seen
        self._lock = threading.Lock()

    def send(self, bodies: Sequence[bytes]) -> None:
        """Append ``bodies`` as consecutive records, with one write and (if ``fsync``) one fsync."""
        payload = [_check_body(body, i) for i, body in enumerate(bodies)]
        if not payload:
            return
        with self._lock:
            if self._fd is None:
                raise InputError(f"the producer of {self._path} is closed")
            fd = self._fd
            with _locked(fd):
                end, last = self._valid_end(fd)
                ms = int(clock.now().timestamp() * 1000)
                buf = bytearray()
                for seq, body in enumerate(payload, start=last + 1):
                    fields = _FIELDS.pack(seq, ms, len(body))
                    crc = zlib.crc32(body, zlib.crc32(fields))
                    buf += RECORD_MAGIC + fields + crc.to_bytes(4, "little") + body
                try:
                    _write_all(fd, buf, end)
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
            self._end, self._last = _START, -1
        if size != self._end:
            scan = _scan(fd, self._end, self._last + 1, keep=False)
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
        self._fd: int | None = _open(path, os.O_RDONLY)
        try:
            self._offset, self._next_seq = self._resume(self._fd)
        except BaseException:
            self.close()
            raise

    def _resume(self, fd: int) -> tuple[int, int]:
        """Where to start: after the checkpoint (its offset checked; scanned for if it is off)."""
        checkpoint = _read_checkpoint(self._checkpoint_path)
        if checkpoint is None:
            return _START, 0
        seq, offset = checkpoint
        if _START <= offset <= os.fstat(fd).st_size:
            head = os.pread(fd, HEADER_SIZE, offset)
            if len(head) < HEADER_SIZE or (
                head[:4] == RECORD_MAGIC and _HEADER.unpack(head)[1] == seq + 1
            ):
                return offset, seq + 1
        # Off, or damage right after the checkpoint: find record ``seq`` (damage is skipped)
        scan = _scan(fd, _START, 0, keep=False, stop_seq=seq)
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
        scan = _scan(self._fd, self._offset, self._next_seq, limit=max_events)
        for region in scan.damaged:  # set aside before anything after it is handed out
            try:
                saved = _save_damaged(self._fd, self._path, region, self._group, fsync=self._fsync)
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
        _write_checkpoint(
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
            _private_dir(self.directory, parents=True)
            _private_dir(self.directory / "checkpoints")
        except OSError as exc:
            raise ConfigError(
                f"cannot use {self.directory} as an event log directory: {exc.strerror or exc}"
            ) from None
        fd = _open(self.path, os.O_RDWR | os.O_CREAT)
        try:
            with _locked(fd):
                head = os.pread(fd, _START, 0)
                if head != FILE_MAGIC:
                    if not FILE_MAGIC.startswith(head):
                        raise InputError(f"{self.path} is not an event log (unknown file header)")
                    _write_all(fd, FILE_MAGIC, 0)  # new, or its creation was cut short
                    if fsync:
                        os.fsync(fd)
                        _fsync_dir(self.directory)
        finally:
            os.close(fd)
        for checkpoint in (self.directory / "checkpoints").glob("*.json"):
            _tighten(checkpoint)  # written 0644 by earlier versions
        if (self.directory / DAMAGED_DIR).is_dir():
            _tighten(self.directory / DAMAGED_DIR)
        self._end, self._last = _START, -1  # cached scan position for last_sequence_number
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
            fd = _open(self.path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size < self._end:
                    self._end, self._last = _START, -1
                scan = _scan(fd, self._end, self._last + 1, keep=False)
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
        return _damaged_path(self.path)

    def checkpoint_of(self, group: str = "$Default") -> int:
        """The sequence number ``group`` last checkpointed, ``-1`` when none."""
        checkpoint = _read_checkpoint(self._checkpoint_path(group))
        return -1 if checkpoint is None else checkpoint[0]

    def lag(self, group: str = "$Default") -> int:
        """How many events ``group`` has not checkpointed yet."""
        return max(0, self.last_sequence_number() - self.checkpoint_of(group))

    def _checkpoint_path(self, group: str) -> Path:
        if not _GROUP.fullmatch(group):
            raise ConfigError(
                f"invalid consumer group {group!r}: use 1-64 letters, digits, '$', '.', '_' or '-'"
            )
        return self.directory / "checkpoints" / f"{group}.json"

    def __repr__(self) -> str:
        return f"LocalEventLog({str(self.directory)!r}, fsync={self.fsync})"
