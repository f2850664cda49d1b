"""Server-sent events (SSE): parse a captured streamed response body.

AOAI streams chat and completions as ``data: {json}`` events ending with ``data: [DONE]``;
the Responses API sends *named* events (``event: response.output_text.delta`` plus a
``data:`` line) and no ``[DONE]``. A body captured by a gateway is not always clean: line
endings may be ``\\r\\n``, the final blank line may be missing, the capture may stop in the
middle of an event, and a data line may not be JSON. Nothing here raises on such input.

Line handling follows the WHATWG ``text/event-stream`` rules: lines end at ``\\r\\n``, ``\\r``
or ``\\n``; a line starting with ``:`` is a comment; ``field: value`` loses one space after the
colon; consecutive ``data`` lines are joined with ``\\n``; a blank line dispatches the event.
Two tolerances go beyond the standard:

- an event still open when the body ends is yielded with ``complete=False`` instead of
  being discarded (it is kept when its data parses; otherwise the stream counts as
  truncated);
- a multi-line data payload that is not JSON as a whole is retried line by line, so a
  capture that lost its blank separator lines still yields its chunks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

__all__ = [
    "DONE",
    "ParsedStream",
    "SseEvent",
    "iter_sse",
    "json_object",
    "parse_json_events",
    "parse_stream",
    "unescape_json_fragment",
]

#: The data payload that ends a chat / completions stream.
DONE: Final = "[DONE]"
_ESCAPE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|u[0-9a-fA-F]{0,3}|.?)", re.DOTALL)
_ESCAPED: Final = dict(zip('"\\/bfnrt', '"\\/\b\f\n\r\t', strict=True))
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its ``event:`` name (``None`` when unnamed) and its data.

    ``complete`` is ``False`` for an event the body ended inside (no closing blank line):
    either the capture lost only the trailing blank line, or the stream was cut mid-event.
    """

    event: str | None
    data: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ParsedStream:
    """The JSON payloads of a stream, with what was skipped on the way.

    ``events`` holds ``(event name, JSON object)`` pairs in stream order; ``done`` says a
    ``[DONE]`` payload was seen; ``bad_lines`` counts data payloads (or lines of a multi-line
    payload) that were not a JSON object; ``truncated`` says the body ended inside an event
    whose data did not parse (a stream cut mid-way).
    """

    events: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    done: bool = False
    bad_lines: int = 0
    truncated: bool = False


def iter_sse(text: str) -> Iterator[SseEvent]:
    """Yield the events of an SSE body, in order (see the module docstring for the rules)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # after the last line ending there is no line (not a blank one)
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SseEvent(name, "\n".join(data))
            name, data = None, []
            continue
        if line[0] == ":":
            continue  # comment / keep-alive
        key, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if key == "data":
            data.append(value)
        elif key == "event":
            name = value or None
        # "id", "retry" and unknown fields carry nothing billable: ignored, as the standard says.
    if data:
        # The body ended without the blank line that closes an event.
        yield SseEvent(name, "\n".join(data), complete=False)


def json_object(payload: str) -> dict[str, Any] | None:
    """``payload`` parsed as a JSON object, or ``None`` when it is not one (never raises)."""
    try:
        obj = orjson.loads(payload)
    except ValueError:  # orjson.JSONDecodeError, invalid UTF-8 (lone surrogates), …
        return None
    return obj if isinstance(obj, dict) else None


def parse_stream(text: str) -> ParsedStream:
    """Parse an SSE body into its JSON objects, noting ``[DONE]``, bad lines and truncation."""
    events: list[tuple[str | None, dict[str, Any]]] = []
    done = truncated = False
    bad = 0
    for ev in iter_sse(text):
        payload = ev.data.strip()
        if not payload:
            continue
        if payload == DONE:
            done = True
            continue
        whole = json_object(payload)
        if whole is not None:
            events.append((ev.event, whole))
            continue
        # Not one JSON document: retry line by line (a capture that lost its blank lines).
        parts = payload.split("\n")
        last = len(parts) - 1
        for i, part in enumerate(parts):
            part = part.strip()
            if not part:
                continue
            if part == DONE:
                done = True
                continue
            obj = json_object(part)
            if obj is not None:
                events.append((ev.event, obj))
            elif not ev.complete and i == last:
                truncated = True  # the body ended inside this payload
            else:
                bad += 1
    return ParsedStream(events, done, bad, truncated)


def parse_json_events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The ``(event name, JSON object)`` pairs of an SSE body; anything else is skipped."""
    return parse_stream(text).events


def unescape_json_fragment(raw: str) -> str:
    """Decode the inside of a JSON string literal, leniently when it was cut mid-escape.

    The original policy logged streamed output as the concatenation of raw, still escaped
    ``content`` strings. An incomplete trailing escape (``\\``, ``\\u4e``) is dropped, an
    unknown escape keeps its character, and an unpaired surrogate becomes U+FFFD.
    """
    try:
        decoded: Any = json.loads('"' + raw + '"', strict=False)
    except ValueError:
        decoded = None
    text = decoded if isinstance(decoded, str) else _ESCAPE.sub(_unescape_one, raw)
    if _SURROGATE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _unescape_one(m: re.Match[str]) -> str:
    s = m.group(1)
    if s[:1] == "u":
        return chr(int(s[1:], 16)) if len(s) == 5 else ""
    return _ESCAPED.get(s, s)
