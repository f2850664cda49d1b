"""One plumbing for both local servers (the gateway and the simulator): the ASGI types, reading
a request body (with a size limit), sending a whole response, and the lifespan protocol.
Imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "ClientGone",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "lifespan",
    "read_body",
    "read_whole",
    "respond",
    "send_whole",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected before sending its whole request body."""


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body; ``None`` once it exceeds ``limit`` bytes (the rest is not read;
    no limit: ``None``).

    Raises :class:`ClientGone` if the client disconnects first.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def read_whole(receive: Receive) -> bytes:
    """The whole request body, however large; :class:`ClientGone` if the client left first."""
    body = await read_body(receive)
    assert body is not None  # no limit: never None
    return body


async def send_whole(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """A whole response: the start with ``headers``, then the body in one message."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond(send: Send, status: int, body: bytes, extra: Headers | None = None) -> None:
    """A JSON response (``content-type``, ``content-length``, then ``extra`` headers)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send_whole(send, status, headers + (extra or []), body)


async def lifespan(
    receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Answer the ASGI lifespan protocol until shutdown (awaiting ``on_shutdown`` first)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
