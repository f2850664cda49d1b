"""Reading events from files: JSONL (streamed), a JSON array, or one JSON object; ``.gz`` too.

Used by ``python -m aoai_helpers ingest`` (through :func:`aoai_helpers.pipeline.service.ingest_files`).
A line that is not valid JSON is still yielded: ingest dead-letters it with its reason. A UTF-8
byte order mark at the start of a file (Windows tools write one) is skipped; the files are
UTF-8 (a line in another encoding is dead-lettered as "not UTF-8").
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final

import orjson

from aoai_helpers.exceptions import InputError
from aoai_helpers.pipeline.ingest import RawEvent

__all__ = ["iter_file_events"]

_SINGLE_OBJECT_LIMIT: Final = (
    64 * 2**20
)  # a pretty-printed single-event file larger than this is not one
_BOM: Final = b"\xef\xbb\xbf"  # UTF-8's byte order mark


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _lines(prefix: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``prefix`` followed by those of ``rest`` (a line split between them is joined)."""
    parts = prefix.split(b"\n")
    for part in parts[:-1]:
        yield part + b"\n"
    if parts[-1]:
        yield parts[-1] + rest.readline()
    yield from rest


def _open(path: Path) -> IO[bytes]:
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def iter_file_events(
    path: str | Path, *, on_bytes: Callable[[int], None] | None = None
) -> Iterator[RawEvent]:
    """Raw events from a file: JSONL (one event per line), a JSON array, or one JSON object.

    ``.gz`` files are decompressed. ``on_bytes`` is called with the bytes read (for progress).
    A line that is not valid JSON is still yielded: ingest dead-letters it with its reason.
    JSONL is streamed line by line (constant memory); a JSON array is read whole, so use
    JSONL for large inputs.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {p}")
    with _open(p) as fh:
        try:
            if fh.read(len(_BOM)) == _BOM:
                if on_bytes:
                    on_bytes(len(_BOM))
            else:
                fh.seek(0)  # a regular file or a gzip stream: both seek back cheaply here
            skipped = 0
            head = fh.read(1)
            while head and head.isspace():
                skipped += head == b"\n"
                head = fh.read(1)
            if head == b"[":
                data = head + fh.read()
                if on_bytes:
                    on_bytes(len(data))
                try:
                    items = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise InputError(
                        f"{p} starts with '[' but is not a JSON array: {exc}"
                    ) from None
                for i, item in enumerate(items, start=1):
                    yield RawEvent(orjson.dumps(item), f"{p.name}[{i}]")
                return
            prefix = head + fh.readline()
            if head == b"{" and not _is_json(prefix):
                # One pretty-printed object, or JSONL whose first event is broken: look further.
                prefix += fh.read(_SINGLE_OBJECT_LIMIT)
                if _is_json(prefix):
                    if on_bytes:
                        on_bytes(len(prefix))
                    yield RawEvent(prefix.strip(), p.name)
                    return
            for lineno, line in enumerate(_lines(prefix, fh), start=skipped + 1):
                if on_bytes:
                    on_bytes(len(line))
                body = line.strip()
                if body:
                    yield RawEvent(body, f"{p.name}:{lineno}")
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read {p}: {exc}") from None
