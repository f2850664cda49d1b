"""The copy of a request an event carries, cut to fit the logger, and what it still proves.

An event carries the request when its usage must be estimated (a pass-through stream, until
reconciled). APIM's ``log-to-eventhub`` cuts messages at 200 KB, so a big request is shrunk
(:func:`shrink_request`), in two steps, keeping the JSON shape ingest counts:

1. every string longer than a cap keeps its first *cap* characters and ends with ``…``; the cap
   is the largest that fits (binary search), so long strings are cut evenly;
2. if that is not enough even with strings cut to :data:`MIN_CAP` characters — many small
   parts — the longest lists (``messages``, ``input``, ``prompt``, ``tools``, content parts) keep
   their first and last *h* items, the middle replaced by one ``{"_omitted": n}`` item, *h*
   again the largest that fits.

Either way the shrunk copy gets ``"_truncated": {"items": …, "strings": …, "chars": …}``,
measured on the **whole** request: the prompt's items (messages, input items, prompts), the
non-empty strings among them, and the characters of every string.
:func:`aoai_helpers.core.tokens.proven_tokens` (it needs the vocabulary) turns
those into a floor no count of the shrunk copy may go below — a chat is at least 3 tokens per
message plus 3, and every non-empty string is at least one token; any text is at least its
characters divided by the longest token of the vocabulary (in bytes) — so 20,000 messages of "hi" are
never billed as 3 tokens again. The floor is a proof, not a guess: the exact figure comes from
the API's usage or from APIM's language-model log (reconciliation).

The APIM policy shrinks the same way (``policies/api-policy.xml``); the tests hold the two to
the same cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = ["MARKER", "MIN_CAP", "OMITTED", "request_stats", "shrink_request"]

MARKER: Final = "_truncated"
OMITTED: Final = "_omitted"
#: Strings are never cut shorter than this before lists are thinned.
MIN_CAP: Final = 32
#: The request fields holding the prompt's items, in the order they are looked for.
ITEM_FIELDS: Final = ("messages", "input", "prompt")
#: Lists thinned in step 2 (besides content parts inside the items).
LIST_FIELDS: Final = ("messages", "input", "prompt", "tools", "functions")


def _walk_strings(node: Any) -> tuple[int, int]:
    """(non-empty strings, characters of all strings) under ``node``, iteratively."""
    strings = chars = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
            strings += 1 if item else 0
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return strings, chars


#: The request fields whose strings are prompt text (the prompt's items and the tools).
TEXT_FIELDS: Final = (*ITEM_FIELDS, "tools", "functions", "instructions")


def request_stats(request: Mapping[str, Any]) -> dict[str, int]:
    """What a request proves about its size: the prompt's items, their non-empty strings, and
    the characters of the strings of the prompt text (:data:`TEXT_FIELDS`)."""
    items: Any = next((request[f] for f in ITEM_FIELDS if f in request), None)
    count = len(items) if isinstance(items, list) else (1 if items else 0)
    strings, _ = _walk_strings(items)
    _, chars = _walk_strings([request.get(f) for f in TEXT_FIELDS])
    return {"items": count, "strings": strings, "chars": chars}


def _size(node: Any) -> int:
    return len(orjson.dumps(node))


def _longest(node: Any) -> int:
    best = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            best = max(best, len(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return best


def _capped(node: Any, cap: int) -> Any:
    if isinstance(node, str):
        return node if len(node) <= cap else node[:cap] + "…"
    if isinstance(node, dict):
        return {k: _capped(v, cap) for k, v in node.items()}
    if isinstance(node, list):
        return [_capped(v, cap) for v in node]
    return node


def _thinned(node: Any, keep: int, top: bool = True) -> Any:
    """``node`` with every list of :data:`LIST_FIELDS` (and content parts) cut to its first and
    last ``keep`` items around one ``{"_omitted": n}`` item."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if (
                isinstance(v, list)
                and (k in LIST_FIELDS or k == "content")
                and len(v) > 2 * keep + 1
            ):
                middle = len(v) - 2 * keep
                head = [_thinned(x, keep, False) for x in v[:keep]]
                tail = [_thinned(x, keep, False) for x in v[len(v) - keep :]] if keep else []
                out[k] = [*head, {OMITTED: middle}, *tail]
            else:
                out[k] = _thinned(v, keep, False)
        return out
    if isinstance(node, list):
        return [_thinned(x, keep, False) for x in node]
    return node


def _largest(fits: Any, hi: int) -> int:
    """The largest ``x`` in 0..hi with ``fits(x)`` (true up to some point, then false), or -1
    when not even 0 fits."""
    if hi < 0 or not fits(0):
        return -1
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def shrink_request(request: dict[str, Any], budget: int) -> dict[str, Any]:
    """``request`` as compact JSON of at most ``budget`` bytes (see the module docstring).

    The input is not modified; a request that fits is returned as it is.
    """
    if _size(request) <= budget:
        return request
    stats = request_stats(request)
    room = budget - _size({MARKER: stats}) - 1

    def with_marker(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, MARKER: stats}

    longest = _longest(request)
    cap = _largest(lambda c: _size(_capped(request, c)) <= room, longest)
    if cap >= MIN_CAP:
        return with_marker(_capped(request, cap))
    base = _capped(request, MIN_CAP)
    widest = max(
        (len(v) for v in _lists(base)),
        default=0,
    )
    keep = _largest(lambda h: _size(_thinned(base, h)) <= room, widest)
    if keep >= 0:
        return with_marker(_thinned(base, keep))
    return {MARKER: stats}


def _lists(node: Any) -> list[list[Any]]:
    found: list[list[Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if isinstance(v, list) and (k in LIST_FIELDS or k == "content"):
                    found.append(v)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
    return found
