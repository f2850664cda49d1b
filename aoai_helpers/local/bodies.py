"""The local gateway's checks of a request body (duplicate keys, nesting depth) and the lossless
``stream_options.include_usage`` rewrite, as the policy's ``aoai-usage-body`` does it. Pure;
imports ``core``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from aoai_helpers.core.routes import Refusal

__all__ = [
    "DUPLICATE_KEYS",
    "JSON_NET_ESCAPES",
    "USAGE_OPTION",
    "has_duplicate_keys",
    "parse_body",
    "rewrites_losslessly",
    "with_include_usage",
]

#: ``stream_options`` as the gateway adds it to a body that has none (the policy's bytes).
USAGE_OPTION: Final = b'"stream_options":{"include_usage":true},'


#: Strings Json.NET may read as dates (a superset: ISO 8601 date-times and ``/Date(…)/``).
_DATE_LIKE: Final = re.compile(r"\A([0-9]{4}-[0-9]{2}-[0-9]{2}T|/Date\()")


#: What Json.NET escapes and orjson does not (U+0085, U+2028, U+2029, UTF-8 encoded).
JSON_NET_ESCAPES: Final = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def has_duplicate_keys(raw: bytes) -> bool:
    """Whether some object of the JSON body names a key twice (the body is valid JSON)."""
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except _Duplicate:
        return True
    except (ValueError, RecursionError):
        return False  # judged by the other checks (orjson parsed it; depth is checked next)
    return False


def rewrites_losslessly(body: Any) -> bool:
    """Whether writing ``body`` again keeps every value: no float (its text may change) and no
    string Json.NET may parse as a date (it would write it back in another form)."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return False
        if isinstance(item, str) and _DATE_LIKE.match(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


DUPLICATE_KEYS: Final = "Bad request: a key appears more than once in an object of the JSON body."


#: A JSON string token, and the colon that makes it a key. Scanned from the start of a valid
#: document, the matches are exactly its string tokens (no quote occurs outside strings).
_STRING_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?')


def _shape(node: Any) -> tuple[int, int]:
    """(How many keys the objects of a parsed document hold, all levels counted; how deep its
    lists/objects nest: the document itself is level 1), in one walk."""
    keys = depth = 0
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        item, level = stack.pop()
        depth = max(depth, level)
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict):
            keys += len(item)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return keys, depth


def _distinct_keys(raw: bytes, keys: int) -> bool:
    """Whether no object of ``raw`` (a valid document whose objects orjson read as holding
    ``keys`` keys) names a key twice, without a second parse: orjson keeps one entry per
    distinct key of an object, so ``keys`` numbers the key tokens of ``raw`` exactly when none
    repeats (escapes included: ``"a"`` and ``"\\u0061"`` are one key to both)."""
    tokens = _STRING_TOKEN.findall(raw)
    return len(tokens) - tokens.count(b"") == keys


def parse_body(raw: bytes, max_depth: int) -> dict[str, Any] | Refusal:
    """A metered call's body: a JSON object, no key twice in an object, at most ``max_depth``
    levels deep; else why it is refused (400)."""
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        return Refusal(400, "Bad request: the body must be a JSON object.")
    keys, depth = _shape(parsed)
    # the second parse (json, which sees every key) only where a key does repeat: the same
    # answer as always parsing twice, including a nesting too deep for it (judged below)
    if not _distinct_keys(raw, keys) and has_duplicate_keys(raw):
        # a parser keeping the first value and one keeping the last would bill one
        # request and serve another ("model" or "stream" twice): refused, as the policy does
        return Refusal(400, DUPLICATE_KEYS)
    if depth > max_depth:
        return Refusal(
            400,
            f"Bad request: the JSON body is nested deeper than {max_depth} levels.",
        )
    return parsed


def with_include_usage(raw: bytes, body: dict[str, Any]) -> bytes:
    """``raw`` asking for the usage chunk: ``"stream_options":{"include_usage":true},`` right
    after the opening brace when it has no ``stream_options``, else written again as Json.NET
    writes it when that cannot change a value (:func:`rewrites_losslessly`), else as it came."""
    brace = len(raw) - len(raw.lstrip(b" \t\n\r"))
    if raw[brace : brace + 1] != b"{":
        return raw
    if "stream_options" not in body:
        return raw[: brace + 1] + USAGE_OPTION + raw[brace + 1 :]
    if not rewrites_losslessly(body):
        return raw
    options = body.get("stream_options")
    injected = dict(body)
    injected["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    text = orjson.dumps(injected)
    for char, escaped in JSON_NET_ESCAPES:
        text = text.replace(char, escaped)
    return text
