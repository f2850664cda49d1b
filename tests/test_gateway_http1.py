"""The gateway's own HTTP/1.1 client (``local/http1.py``) against scripted backends on real
loopback sockets: every answer reaches the client and the event exactly as it does through
httpx (the gateway's client for the tests' transports and for ``https://``), keep-alive
connections are reused and dropped ones replaced, and failures get the policy's statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from secrets_registry import register_secret

from aoai_helpers.local.gateway import BackendCut, Gateway
from aoai_helpers.local.http1 import Http1Pool, UpstreamError
from aoai_helpers.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SECRET = "http1-backend-secret-000000"
KEY = "http1-finance-key-aaaaaaaaaa"
register_secret(SECRET, KEY)
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
USAGE = b'"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}'
JSON_BODY = b'{"id":"x","model":"gpt-4o-2024-11-20","choices":[],' + USAGE + b"}"
SSE = [
    b'data: {"choices":[],"prompt_filter_results":[]}\n\n',
    b'data: {"model":"gpt-4o-2024-11-20","choices":[{"delta":{"content":"Hi"}}]}\n\n',
    b'data: {"model":"gpt-4o-2024-11-20","choices":[],' + USAGE + b"}\n\n",
    b"data: [DONE]\n\n",
]


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


#: Scripted answers: a list of writes (``None``: close the connection there).
SCRIPTS: dict[str, list[bytes | None]] = {
    "json": [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ms-region: West Europe\r\n"
        b"content-length: %d\r\n\r\n" % len(JSON_BODY),
        JSON_BODY,
    ],
    "sse": [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        *(b"%x\r\n%s\r\n" % (len(p), p) for p in SSE),
        b"0\r\n\r\n",
    ],
    "until-close": [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
        JSON_BODY,
        None,
    ],
    "continue": [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % len(JSON_BODY)
        + JSON_BODY,
    ],
    "throttled": [
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 7"
        b"\r\ncontent-length: 20\r\n\r\n",
        b'{"error":"too many"}',
    ],
    "no-content": [b"HTTP/1.1 204 No Content\r\n\r\n"],
    "cut-sse": [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"\r\n" + _chunked(SSE[:2])[:-5],  # two chunks, then the connection drops
        None,
    ],
    "cut-head": [b"HTTP/1.1 200 OK\r\ncontent-type: appli", None],
    "garbage": [b"SPDY/9 banana\r\n\r\n", None],
}


def _next_request(conn: socket.socket, data: bytes) -> tuple[bytes, bytes] | None:
    """The next request on ``conn`` (head and content-length body), read after ``data``
    (bytes already received), and what was received beyond it; None at the end of the
    connection."""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, data = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(data) < length:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    return head + b"\r\n\r\n" + data[:length], data[length:]


class Backend:
    """A loopback server answering each request with ``script`` (keep-alive unless it closes);
    it records what it received and how many connections it accepted."""

    def __init__(self, script: list[bytes | None]) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the gateway may drop a connection it left
            data = b""
            while True:
                got = _next_request(conn, data)
                if got is None:
                    return
                request, data = got
                self.requests.append(request)
                for write in self.script:
                    if write is None:
                        return
                    conn.sendall(write)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def backend(name: str) -> Iterator[Backend]:
    server = Backend(SCRIPTS[name])
    try:
        yield server
    finally:
        server.close()


def _gateway(url: str, capture: str, own: bool) -> tuple[Gateway, list[bytes]]:
    """A gateway calling ``url`` with its own client (``own``), else with httpx over sockets."""
    spec = load_spec(ROOT / "examples" / "gateway.yaml")
    events: list[bytes] = []
    gateway = Gateway(
        spec,
        keys={"bu-finance": KEY},
        backend_secret=SECRET,
        sink=events.append,
        backend_urls={b.name: url for b in spec.backends},
        capture=capture,  # type: ignore[arg-type]
        transport=None if own else httpx.AsyncHTTPTransport(),
        timeout=2.0,
    )
    assert (gateway._upstream._own is not None) is own
    return gateway, events


def _call(gateway: Gateway, body: dict[str, Any], times: int = 1) -> list[Any]:
    """``times`` calls from one event loop: (status, headers without date/server, body) each,
    or the exception the gateway raised into its server."""

    async def go() -> list[Any]:
        out: list[Any] = []
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            for _ in range(times):
                try:
                    r = await c.post(PATH, json=body, headers={"api-key": KEY, "x-trace": "t1"})
                except BackendCut as exc:
                    out.append(type(exc).__name__)
                    continue
                kept = [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "server")]
                out.append((r.status_code, kept, r.content))
        await gateway.aclose()
        return out

    return asyncio.run(go())


def _event(raw: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(raw)
    event.pop("RequestId")
    event.pop("ExecTimeUTC")
    return event


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("capture", ["passthrough", "buffered"])
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_answer_is_relayed_and_logged_as_through_httpx(name: str, capture: str) -> None:
    stream = name in ("sse", "cut-sse")
    body = {**CHAT, "stream": stream}
    seen = {}
    for own in (True, False):
        with backend(name) as server:
            gateway, events = _gateway(server.url, capture, own)
            seen[own] = (_call(gateway, body), [_event(e) for e in events])
        assert len(events) == 1, (name, own)  # exactly one event per call, whichever client
    assert seen[True] == seen[False]
    if name in ("cut-head", "garbage"):
        assert seen[True][0][0][0] == 500 and seen[True][1][0]["StatusCode"] == 500
    if name == "cut-sse" and capture == "passthrough":
        assert seen[True][0] == ["BackendCut"]  # the client's connection is dropped too


def test_connections_are_kept_alive_and_a_closed_one_is_replaced() -> None:
    with backend("json") as server:
        gateway, events = _gateway(server.url, "passthrough", own=True)
        assert [r[0] for r in _call(gateway, CHAT, times=5)] == [200] * 5
        assert server.connections == 1 and len(events) == 5
    with backend("until-close") as server:  # each answer ends its connection
        gateway, events = _gateway(server.url, "passthrough", own=True)
        assert [r[0] for r in _call(gateway, CHAT, times=3)] == [200] * 3
        assert server.connections == 3


def test_what_the_backend_receives() -> None:
    with backend("json") as server:
        gateway, _ = _gateway(server.url, "passthrough", own=True)
        _call(gateway, CHAT)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST " + PATH.encode() + b" HTTP/1.1"
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    assert fields[b"host"] == server.url.removeprefix("http://").encode()
    # the gateway's credential (the sample's backend uses its managed identity), never the caller's
    assert fields[b"authorization"] == b"Bearer " + SECRET.encode()
    assert fields[b"x-trace"] == b"t1" and fields[b"content-length"] == b"%d" % len(body)
    assert KEY.encode() not in server.requests[0]
    assert orjson.loads(body) == CHAT


def test_refused_and_silent_backends_are_500_and_504() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now

    async def call(url: str, timeout: float) -> int:
        try:
            await Http1Pool(timeout, 1.0).send(urlsplit(url), "/", {}, b"{}")
        except UpstreamError as exc:
            return exc.status
        return 0

    assert asyncio.run(call(f"http://127.0.0.1:{port}", 1.0)) == 500

    async def injected() -> int:  # never written into the request (httpx refuses it too)
        try:
            await Http1Pool(1.0, 1.0).send(
                urlsplit("http://127.0.0.1:9"), "/", {"a": "b\r\nc: d"}, b""
            )
        except UpstreamError as exc:
            return exc.status
        return 0

    assert asyncio.run(injected()) == 500
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        assert asyncio.run(call(f"http://127.0.0.1:{silent.getsockname()[1]}", 0.2)) == 504


def test_a_big_body_is_read_whole_at_the_reader_s_pace_and_the_connection_reused() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: reading pauses above 256 KiB buffered
    script: list[bytes | None] = [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        b"content-length: %d\r\n\r\n" % len(big),
        big,
    ]
    server = Backend(script)

    async def go() -> list[bytes]:
        pool = Http1Pool(5.0, 1.0)
        got = []
        first = await pool.send(urlsplit(server.url), "/", {}, b"{}")
        await asyncio.sleep(0.2)  # all of it arrived meanwhile (or reading paused)
        got.append(b"".join([chunk async for chunk in first.aiter_raw()]))
        await first.aclose()
        left = await pool.send(urlsplit(server.url), "/", {}, b"{}")
        await asyncio.sleep(0.2)
        await left.aclose()  # its body never read: the connection is not reused
        again = await pool.send(urlsplit(server.url), "/", {}, b"{}")
        got.append(await again.aread())
        await again.aclose()
        await pool.aclose()
        return got

    try:
        assert asyncio.run(go()) == [big, big]
        assert server.connections in (2, 3)  # the abandoned one is replaced (or was complete)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("url", "own"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080/prefix", True),
        ("https://aoai.openai.azure.com", False),  # TLS: httpx
        ("http://user@127.0.0.1:8080", False),
        ("http://127.0.0.1:8080/a b", False),  # httpx would re-encode the path
        ("http://127.0.0.1:8080/?x=1", False),
    ],
)
def test_which_backends_the_gateway_s_own_client_calls(url: str, own: bool) -> None:
    from aoai_helpers.local.upstream import _plain

    assert (_plain(url) is not None) is own


def test_a_proxy_in_the_environment_leaves_http_backends_to_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aoai_helpers.local.upstream import _plain

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert _plain("http://127.0.0.1:8080") is None
    assert _plain("http://localhost:8080") is not None  # bypassed: no proxy for it


# --- the pool alone, against hand-written backends (found in review)


@contextmanager
def _serve(handler: Any) -> Iterator[int]:
    """A thread server calling ``handler(conn)`` per accepted connection (closed after it),
    listening on the port yielded until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        listener.close()
        thread.join(5)


def _read_request(conn: socket.socket) -> bool:
    """Read one request; False at the end of the connection."""
    return _next_request(conn, b"") is not None


_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _pool_call(pool: Http1Pool, port: int) -> tuple[int, bytes]:
    response = await pool.send(urlsplit(f"http://127.0.0.1:{port}"), "/x", {}, b"{}")
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


def _keep_alive(conn: socket.socket) -> None:
    while _read_request(conn):
        conn.sendall(_OK)


def test_a_pool_used_from_a_new_event_loop_after_the_old_one_closed() -> None:
    """Idle connections of a closed event loop are dropped, not closed through it (which
    raises): the next loop's call opens its own."""
    import gc
    import warnings

    pool = Http1Pool(5.0, 2.0)

    async def last(port: int) -> tuple[int, bytes]:
        try:
            return await _pool_call(pool, port)
        finally:
            await pool.aclose()

    with _serve(_keep_alive) as port, warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the dropped sockets, collected here
        answers = [asyncio.run(_pool_call(pool, port)) for _ in range(2)]
        answers.append(asyncio.run(last(port)))
        gc.collect()
    assert answers == [(200, b"{}")] * 3


def test_a_reset_connection_does_not_end_a_body_delimited_by_the_connection() -> None:
    """A body that ends where the connection ends is complete only at a clean end: a reset
    mid-body is a failure (as httpx's ReadError), never a short body passed off as whole."""
    import struct
    import time

    def reset(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"usage":')
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with _serve(reset) as port, pytest.raises(UpstreamError) as failed:
        asyncio.run(_pool_call(Http1Pool(5.0, 2.0), port))
    assert failed.value.status == 500


def test_bytes_after_a_complete_response_leave_that_response_standing() -> None:
    """Garbage after a complete response (in the same read or a later one): the response was
    served and stands; the connection is out of step and the next call gets a fresh one."""

    def trailing(conn: socket.socket) -> None:
        if _read_request(conn):
            conn.sendall(_OK + b"garbage")

    async def go(port: int) -> list[tuple[int, bytes]]:
        pool = Http1Pool(5.0, 2.0)
        try:
            return [await _pool_call(pool, port), await _pool_call(pool, port)]
        finally:
            await pool.aclose()

    with _serve(trailing) as port:
        assert asyncio.run(go(port)) == [(200, b"{}")] * 2


def test_an_idle_connection_the_backend_closed_is_not_reused() -> None:
    """The backend closes an idle connection while the event loop is busy (it has not seen the
    close yet): the next call opens a fresh connection instead of failing on the stale one."""
    closed = threading.Event()

    def one_call_then_close(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(_OK)
        conn.shutdown(socket.SHUT_RDWR)
        closed.set()

    async def go(port: int) -> list[tuple[int, bytes]]:
        pool = Http1Pool(5.0, 2.0)
        first = await _pool_call(pool, port)
        assert closed.wait(10)
        import time

        time.sleep(0.05)  # blocking: the loop cannot run connection_lost before the next call
        try:
            return [first, await _pool_call(pool, port)]
        finally:
            await pool.aclose()

    with _serve(one_call_then_close) as port:
        assert asyncio.run(go(port)) == [(200, b"{}")] * 2


def test_calls_cancelled_while_connecting_give_their_connection_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each call cancelled while its connection was being opened gives its slot back: after
    as many of them as there are slots, a call still gets a connection (not a 504)."""
    from aoai_helpers.local import http1

    monkeypatch.setattr(http1, "MAX_CONNECTIONS", 3)
    opened = asyncio.Event

    async def go(port: int) -> tuple[int, bytes]:
        pool = Http1Pool(5.0, 2.0)
        loop = asyncio.get_running_loop()
        release = opened()

        async def hanging(*_a: Any, **_k: Any) -> Any:
            await release.wait()
            raise OSError("never opened")

        with monkeypatch.context() as patch:
            patch.setattr(loop, "create_connection", hanging)
            for _ in range(3):
                task = asyncio.create_task(_pool_call(pool, port))
                await asyncio.sleep(0.01)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            return await asyncio.wait_for(_pool_call(pool, port), 5)
        finally:
            await pool.aclose()

    with _serve(_keep_alive) as port:
        assert asyncio.run(go(port)) == (200, b"{}")
