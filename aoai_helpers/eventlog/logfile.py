"""The local event log's on-disk format: records, checkpoints and damaged regions, read and written
with private file modes (:mod:`.local` is the log that uses them). Imports :mod:`.protocol`
and the top level.

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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aoai_helpers import clock
from aoai_helpers.eventlog.protocol import MAX_EVENT_BYTES
from aoai_helpers.exceptions import InputError

__all__ = [
    "CRC_FIELDS",
    "DAMAGED_DIR",
    "DAMAGED_NAME",
    "FILE_MAGIC",
    "FIRST_RECORD",
    "GROUP_NAME",
    "HEADER_SIZE",
    "LOG_NAME",
    "POLL_INTERVAL",
    "RECORD_HEADER",
    "RECORD_MAGIC",
    "DamagedRegion",
    "check_body",
    "damaged_file",
    "fsync_dir",
    "locked",
    "open_private",
    "private_dir",
    "read_checkpoint",
    "read_damaged",
    "save_damaged",
    "scan_log",
    "tighten",
    "write_all",
    "write_checkpoint",
]

FILE_MAGIC: Final = b"AOAIEVL1"


RECORD_MAGIC: Final = b"EVT1"


RECORD_HEADER: Final = struct.Struct(
    "<4sQqII"
)  # magic, sequence number, enqueued ms, length, crc32


CRC_FIELDS: Final = struct.Struct("<QqI")  # the part of the header the CRC covers


HEADER_SIZE: Final = RECORD_HEADER.size  # 28


FIRST_RECORD: Final = len(FILE_MAGIC)  # offset of the first record


_CHUNK: Final = 1 << 20  # bytes read at a time


POLL_INTERVAL: Final = 0.025  # seconds between looks at the file while waiting


LOG_NAME: Final = "events.log"


DAMAGED_DIR: Final = "damaged"


DAMAGED_NAME: Final = f"{LOG_NAME}.damaged"


_FILE_MODE: Final = 0o600  # the log holds request text: owner only


_DIR_MODE: Final = 0o700


GROUP_NAME: Final = re.compile(r"[A-Za-z0-9$][A-Za-z0-9$._-]{0,63}")


def open_private(path: Path, flags: int) -> int:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise InputError(f"cannot open the event log {path}: {exc.strerror or exc}") from None
    tighten(fd)
    return fd


def tighten(fd_or_path: int | Path) -> None:
    """Drop group and other permissions from a file or directory of ours (others' are left)."""
    with contextlib.suppress(OSError):
        st = os.stat(fd_or_path)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(fd_or_path, stat.S_IMODE(st.st_mode) & 0o700)


def private_dir(path: Path, *, parents: bool = False) -> None:
    """``mkdir`` with mode 0700 (tightened if it exists); ``OSError`` if it cannot be made."""
    path.mkdir(mode=_DIR_MODE, parents=parents, exist_ok=True)
    tighten(path)


@contextlib.contextmanager
def locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def write_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def fsync_dir(directory: Path) -> None:
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
    magic, seq, ms, length, crc = RECORD_HEADER.unpack(head)
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


def scan_log(
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


def check_body(body: bytes, index: int) -> bytes:
    data = bytes(body)
    if len(data) > MAX_EVENT_BYTES:
        raise InputError(
            f"event {index}: body of {len(data):,} bytes exceeds the 1 MiB limit of Event Hubs "
            f"({MAX_EVENT_BYTES:,} bytes)"
        )
    return data


def read_checkpoint(path: Path) -> tuple[int, int] | None:
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


def write_checkpoint(path: Path, seq: int, next_offset: int, *, fsync: bool) -> None:
    """Replace the checkpoint file atomically (temp file, fsync, ``os.replace``)."""
    stamp = clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = json.dumps({"sequence_number": seq, "next_offset": next_offset, "updated_utc": stamp})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
        try:
            write_all(fd, data.encode("utf-8"), 0)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot write the checkpoint {path}: {exc.strerror or exc}") from None


def damaged_file(log_path: Path) -> Path:
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


def save_damaged(
    fd: int, log_path: Path, region: DamagedRegion, group: str, *, fsync: bool
) -> Path:
    """Append ``region``'s bytes to the damaged file unless they are there already; its path.

    Raises :class:`InputError` if they cannot be set aside (they are still in the log, which
    is never changed: the caller says so and goes on).
    """
    path = damaged_file(log_path)
    try:
        private_dir(path.parent)
        out = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    except OSError as exc:
        raise InputError(
            f"cannot set the damaged region aside in {path}: {exc.strerror or exc}"
        ) from None
    try:
        tighten(out)
        with locked(out):
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
            write_all(out, data, os.fstat(out).st_size)
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
