"""What the local gateway sends back: a pass-through stream relayed chunk by chunk
(:func:`pass_through`), a buffered stream without the usage chunk the gateway asked for
(:func:`strip_usage_chunk`), the usage of a buffered body, and the APIM-shaped error bodies of
a failed backend call. Imports ``core``, ``azure.apim``, :mod:`.asgi` and :mod:`.upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl, urlencode

import orjson

from aoai_helpers.azure.apim.policy import (
    BACKEND_ERROR_MESSAGE,
    BACKEND_TIMEOUT_MESSAGE,
)
from aoai_helpers.core.usage import summarize_stream, usage_from_body
from aoai_helpers.local.asgi import Receive, Send
from aoai_helpers.local.upstream import UpstreamError, UpstreamResponse

__all__ = [
    "BAD_HEADER",
    "BAD_LENGTH",
    "BODY_TIMEOUT",
    "CANNOT_LOG",
    "BackendCut",
    "apim_error",
    "backend_headers",
    "backend_query",
    "failure_body",
    "parse_query",
    "pass_through",
    "response_headers",
    "strip_usage_chunk",
    "too_large",
    "usage_of",
]


class BackendCut(Exception):
    """Raised into the ASGI server to abort a client connection whose backend stream was cut."""


def failure_body(status: int) -> bytes:
    return apim_error(status, BACKEND_TIMEOUT_MESSAGE if status == 504 else BACKEND_ERROR_MESSAGE)


def apim_error(status: int, message: str) -> bytes:
    """An APIM-shaped error body."""
    return orjson.dumps({"statusCode": status, "message": message})


def strip_usage_chunk(body: bytes) -> bytes:
    """A buffered SSE body without its usage chunk(s): the ``data:`` events whose JSON has
    ``"choices": []`` and a ``usage`` object (what ``include_usage`` adds at the end).

    Every other byte is kept as it was: other events (Azure's preamble has ``choices: []`` but
    no usage), comments, ``[DONE]``, the separators and line endings.
    """
    if b'"usage"' not in body:
        return body
    out: list[bytes] = []
    block: list[bytes] = []
    for line in body.splitlines(keepends=True):
        block.append(line)
        if line.strip() == b"":  # a blank line ends an event
            if not _is_usage_chunk(block):
                out.extend(block)
            block = []
    if block and not _is_usage_chunk(block):
        out.extend(block)
    return b"".join(out)


def _is_usage_chunk(block: list[bytes]) -> bool:
    data = b"".join(line.strip()[5:].strip() for line in block if line.strip().startswith(b"data:"))
    if not data or data == b"[DONE]" or b'"usage"' not in data:
        return False
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(chunk, dict)
        and chunk.get("choices") == []
        and isinstance(chunk.get("usage"), dict)
    )


def usage_of(text: str, is_sse: bool) -> tuple[str | None, dict[str, int] | None]:
    """Model and usage numbers of a buffered body (only the numbers are logged)."""
    if is_sse:
        summary = summarize_stream(text)
        found, model = summary.usage, summary.model
    else:
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None, None
        found = usage_from_body(body)
        model = body.get("model") if isinstance(body, dict) else None
        if model is None and isinstance(body, dict) and isinstance(body.get("response"), dict):
            model = body["response"].get("model")
    if not isinstance(model, str) or not model:
        model = None
    return model, (found.as_dict() if found is not None else None)


async def pass_through(
    response: UpstreamResponse,
    headers: list[tuple[bytes, bytes]],
    receive: Receive,
    send: Send,
    relayed: list[bytes],
) -> bool:
    """Stream the backend body to the client as it arrives; stop if the client goes away.

    Each chunk is appended to ``relayed`` after it was sent (for the language-model log).
    Returns True when the backend's body ended with the client still there: the caller
    logs the event and then sends the end of the response.
    """
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        try:
            async for chunk in response.aiter_raw():
                if gone.is_set():
                    relayed.append(chunk)  # received from the backend: served
                    return False
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                relayed.append(chunk)
        except UpstreamError as exc:
            # The backend dropped the connection mid-body: drop the client's too (as APIM
            # does when not buffering), rather than end a cut stream as if complete.
            raise BackendCut("backend closed the stream before its end") from exc
        return not gone.is_set()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


#: The APIM-shaped bodies of the gateway's own refusals (as APIM words them).
BAD_HEADER: Final = (
    b'{"statusCode": 400, "message": "Bad request: a header name or value contains CR, LF or NUL."}'
)
BAD_LENGTH: Final = b'{"statusCode": 400, "message": "Bad request: invalid Content-Length."}'
CANNOT_LOG: Final = (
    b'{"statusCode": 503, "message": "Service unavailable: the gateway cannot log calls right '
    b'now, so it does not serve them."}'
)
BODY_TIMEOUT: Final = (
    b'{"statusCode": 408, "message": "Request timeout: the body did not arrive in time."}'
)


def too_large(limit: int) -> bytes:
    """APIM-style 413 body."""
    return (
        b'{"statusCode": 413, "message": "Request entity too large: the request body exceeds '
        + str(limit).encode()
        + b' bytes."}'
    )


_RESPONSE_DROP: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"date", b"server"}
)


def response_headers(
    response: UpstreamResponse, extra: Mapping[str, str] | None
) -> list[tuple[bytes, bytes]]:
    """The backend's headers as the client gets them (minus framing and the backend's own
    ``date`` and ``server``), then ``extra`` (the token limit's)."""
    out = [(k, v) for k, v in response.headers if k.lower() not in _RESPONSE_DROP]
    if extra:
        out += [(k.encode(), v.encode()) for k, v in extra.items()]
    return out


#: Request headers never forwarded: framing, the caller's credentials, encodings.
_HOP_BY_HOP: Final = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "api-key",
        "ocp-apim-subscription-key",
        "authorization",
        "accept-encoding",
    }
)


def backend_headers(headers: Mapping[str, str], key_auth: bool, secret: str) -> dict[str, str]:
    """The caller's headers as the backend gets them: without hop-by-hop, forwarding and
    credential headers, with the gateway's own ``api-key`` (``key_auth``) or bearer token."""
    out = {
        k: v
        for k, v in headers.items()
        if k not in _HOP_BY_HOP and k != "forwarded" and not k.startswith("x-forwarded-")
    }
    if key_auth:
        out["api-key"] = secret
    else:
        out["authorization"] = f"Bearer {secret}"
    return out


#: Query strings up to this long have their parse (and what is forwarded of them) remembered:
#: both are pure functions of the string, and callers send the same few (``api-version=…``).
_CACHED_QUERY: Final = 512


@functools.lru_cache(maxsize=256)
def _parsed(query_string: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(query_string, keep_blank_values=True))


def _without_key(query: Sequence[tuple[str, str]]) -> str:
    return urlencode([(k, v) for k, v in query if k != "subscription-key"])


_forwarded: Final = functools.lru_cache(maxsize=256)(_without_key)  # for tuples (hashable)


def parse_query(query_string: str) -> Sequence[tuple[str, str]]:
    """The request's query as ``parse_qsl(…, keep_blank_values=True)`` reads it."""
    if len(query_string) > _CACHED_QUERY:
        return parse_qsl(query_string, keep_blank_values=True)
    return _parsed(query_string)


def backend_query(query: Sequence[tuple[str, str]]) -> str:
    """The query the backend gets: the caller's minus its ``subscription-key``, encoded."""
    if isinstance(query, tuple) and sum(len(k) + len(v) for k, v in query) <= _CACHED_QUERY:
        return _forwarded(query)
    return _without_key(query)
