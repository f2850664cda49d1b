"""The local stack's servers: an ASGI app served by uvicorn on a pre-bound loopback socket, in a
daemon thread (:class:`ServerThread`), closing connections that send no request headers in
time and keeping quiet about streams cut on purpose. Imports ``local.gateway``,
``local.simulator`` (the cut exceptions) and the top level.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.gateway import BackendCut
from aoai_helpers.local.simulator import StreamCutError

__all__ = [
    "ServerThread",
]


class _QuietCut(logging.Filter):
    """Hide the server's traceback for a connection aborted on purpose (a configured stream cut)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (BackendCut, StreamCutError))


def _timed_protocol(header_timeout: float) -> type[Any]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) closing a connection that has
    not sent its first request's headers within ``header_timeout`` seconds (after a response,
    uvicorn's own keep-alive timeout bounds the wait for the next request)."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - the local extra installs httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeaderTimeout(base):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_late(self) -> None:
            if self.cycle is None:  # no request has started on this connection
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeout


class ServerThread:
    """An ASGI app served by uvicorn on a pre-bound loopback socket, in a daemon thread.

    ``header_timeout``: a connection that sends no request headers within it is closed.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "server",
        header_timeout: float = 10.0,
    ):
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose
        # proto is TCP, and without it every keep-alive response (headers and body are two
        # writes) waited ~40 ms for the client's delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self.sock.listen(2048)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan="auto",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            # neither app reads the client address or scheme: no X-Forwarded-* rewriting layer
            proxy_headers=False,
            http=_timed_protocol(header_timeout),
        )
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_QuietCut())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        serve = self.server.serve(sockets=[self.sock])
        try:
            import uvloop  # the ``local`` extra (not on Windows): a faster event loop
        except ImportError:
            asyncio.run(serve)
        else:
            uvloop.run(serve)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()
