"""The local gateway's own HTTP/1.1 client for plain ``http://`` backends (the simulator):
keep-alive connections on the event loop's transports, responses parsed by ``httptools``
(what uvicorn parses requests with), each body chunk handed on as it arrives.

It does what the gateway needs from httpx, at a fraction of its cost per call and per chunk:
``POST`` with a whole body, a streamed response, httpx's limits (100 connections per backend
at most, 20 kept idle, for 5 s) and timeouts (connect; then read, per wait for the next bytes;
a wait for a free connection counts as a read); an idle connection is reused only if its
socket has nothing to read (a backend that closed it is not written to). A failure is an :class:`UpstreamError` with the status the policy's on-error
answers: 504 for a read timeout, 500 for anything else (refused, dropped, unparseable). It
sends the caller's headers as the gateway filtered them, ``host`` and ``content-length``, and
no defaults of its own (httpx adds ``accept``, ``accept-encoding``, ``connection`` and
``user-agent``): the backend is never asked to compress, so the body relayed and the body read
for usage are the bytes it sent. Imports nothing of the package.
"""

from __future__ import annotations

import asyncio
import re
import select
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from itertools import chain
from typing import Final, cast
from urllib.parse import SplitResult

try:
    import httptools
except ImportError:  # pragma: no cover - the local extra installs it (uvicorn's fast parser)
    httptools = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "Http1Pool", "UpstreamError"]

#: Whether this client can be used (``httptools`` is installed).
AVAILABLE: Final = httptools is not None

#: httpx's default limits (``httpx.Limits``), kept.
MAX_CONNECTIONS: Final = 100
MAX_IDLE: Final = 20
IDLE_EXPIRY: Final = 5.0
#: Body bytes buffered before the backend socket stops being read (a slow client).
_HIGH_WATER: Final = 256 * 1024
_DROPPED: Final = "the backend closed the connection before the end of its response"
_CONTROL: Final = re.compile(r"[\r\n\x00]")


class UpstreamError(Exception):
    """A backend call that failed: ``status`` is what the client gets and the event says."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.slots: asyncio.Semaphore | None = None  # held while a request uses it
        self._parser = httptools.HttpResponseParser(self)
        self._paused = False
        self._begin()

    def _begin(self) -> None:
        """Ready for the next response (a connection reused after one whose body was left)."""
        if self._paused and self.transport is not None:
            self.transport.resume_reading()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.error: UpstreamError | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._until_eof = True  # no content-length and not chunked: the body ends at EOF
        self._keep_alive = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self.complete:
            # bytes after a complete response: that response stands (it was served), but the
            # connection is out of step and never reused
            self._keep_alive = False
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:  # garbage after a complete response: that response stands
                self._keep_alive = False
                self.close()
            else:
                self._fail(UpstreamError(500, f"the backend's response is not valid HTTP: {exc}"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and self._until_eof and exc is None:
                self.complete = True  # a body delimited by a clean end of the connection
            else:
                self.error = UpstreamError(500, _DROPPED)
        self._wake()

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (
            lower == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._until_eof = False
        self.headers.append((lower, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational (100 Continue): the real response follows
            self.headers.clear()
            self._until_eof = True
            return
        self.status, self.head_done = status, True
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once complete
        if status in (204, 304):
            self._until_eof = False

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    # --- used by the pool and the response
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return self.complete and self.error is None and not self.closed and self._keep_alive

    async def wait(self, timeout: float) -> None:
        """Until something happens on the connection (bytes, its end), at most ``timeout`` s."""
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(UpstreamError(504, "the backend did not answer in time"))
            waiter.set_result(None)

    def take(self) -> bytes:
        """Every body byte received and not taken yet, in one piece."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def has_body(self) -> bool:
        return bool(self._chunks)


def _quiet(conn: _Connection) -> bool:
    """Whether an idle connection has nothing to read: a backend that closed it (or sent
    anything) while idle makes its socket readable before the event loop has run the callback
    that would mark it closed; such a connection is not reused (httpcore checks the same)."""
    sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
    if sock is None:
        return False
    poller = select.poll()  # not select.select: no FD_SETSIZE limit
    try:
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class _Response:
    """A backend response whose head has arrived; the body is read from its connection."""

    def __init__(self, pool: _Backend, conn: _Connection, timeout: float) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self.status_code = conn.status
        self.headers = conn.headers
        found = next((v for k, v in conn.headers if k == b"content-type"), b"")
        self.content_type = found.decode("latin-1")

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None, "the response is closed"
        while True:
            if conn.has_body():
                yield conn.take()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait(self._timeout)

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class _Backend:
    """The connections to one ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connections and the semaphore belong to one event loop (a new one starts afresh)."""
        if self._loop is not loop:
            self._loop = loop
            stale, self._idle = self._idle, []
            for conn in stale:
                if not conn.loop.is_closed():  # a closed loop's transports cannot be closed
                    conn.close()
            self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def acquire(self, connect_timeout: float, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        self._on_loop(loop)
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout)
            except TimeoutError:
                raise UpstreamError(504, "no connection to the backend became free") from None
        else:
            await self._slots.acquire()
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since <= IDLE_EXPIRY and _quiet(conn):
                conn._begin()
                conn.slots = self._slots
                return conn
            conn.close()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), self.host, self.port),
                connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._slots.release()
            raise UpstreamError(500, f"cannot connect to the backend: {exc}") from None
        except BaseException:  # cancelled while connecting: the slot is free again
            self._slots.release()
            raise
        conn.slots = self._slots
        return conn

    def release(self, conn: _Connection) -> None:
        """A connection whose response is done with: kept idle if it can carry another."""
        if conn.slots is not None:  # the semaphore it was taken from (of its event loop)
            conn.slots.release()
            conn.slots = None
        if conn.reusable() and len(self._idle) < MAX_IDLE and conn.loop is self._loop:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle = []


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to plain ``http://`` backends (see the module docstring)."""

    def __init__(self, timeout: float, connect_timeout: float) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._backends: dict[tuple[str, int], _Backend] = {}

    async def send(
        self, base: SplitResult, target: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        """POST ``body`` to ``target`` (path and query) on ``base``'s host: the response, once
        its head arrived (its body is read with ``aiter_raw`` / ``aread``; ``aclose`` it)."""
        if _CONTROL.search("".join(chain.from_iterable(headers.items()))):
            # what httpx refuses too (LocalProtocolError): never written into the request
            raise UpstreamError(500, "a header name or value holds CR, LF or NUL")
        host = base.hostname or ""
        port = base.port or 80
        backend = self._backends.get((host, port))
        if backend is None:
            backend = self._backends[(host, port)] = _Backend(host, port)
        head = [f"POST {target} HTTP/1.1\r\nhost: {base.netloc}\r\n".encode("latin-1")]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items()]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        data = b"".join(head)
        conn = await backend.acquire(self._connect_timeout, self._timeout)
        try:
            assert conn.transport is not None
            if len(body) < 65536:  # one write (one segment) for the usual request
                conn.transport.write(data + body)
            else:  # a big body is not copied again
                conn.transport.write(data)
                conn.transport.write(body)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._timeout)
        except BaseException:
            conn.close()  # mid-request: never reused
            backend.release(conn)
            raise
        return _Response(backend, conn, self._timeout)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            backend.close()
