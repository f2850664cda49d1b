"""Hostile callers at the local gateway, driven at the ASGI level (clients refuse to send some
of these requests), with the real simulator behind the gateway in-process.

What the gateway does (documented in ``aoai_helpers/local/gateway.py``):

- no key, an empty key, an unknown key → 401 (APIM's messages); backend untouched, no event;
- the key is taken from the first of ``api-key``, ``Ocp-Apim-Subscription-Key``, query
  ``subscription-key`` that is present, and only from it: ``api-key`` wins over a spoofed
  ``Ocp-Apim-Subscription-Key`` (and an invalid ``api-key`` is a 401, with no fallback to the
  other header); a credential header sent twice is a 401; ``Authorization: Bearer`` is never
  read as a key;
- the event names the key's own subscription, never one claimed in a header, the query or
  the body;
- a body over ``max_body_bytes`` (default 8 MiB) → 413 with an APIM-style JSON body, refused
  from ``Content-Length`` before reading, or while reading a chunked body; no event;
- CR, LF or NUL in a header name or value → 400 before anything else;
- ``Host`` / ``Forwarded`` / ``X-Forwarded-*`` from the client never reach the backend, nor
  does the client's ``Authorization``: the backend sees only the gateway's own credential;
- no key shows up in any response, log line or event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from secrets_registry import record_output, register_secret

from aoai_helpers.local.gateway import DEFAULT_MAX_BODY_BYTES, Gateway
from aoai_helpers.local.simulator import Simulator
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BACKEND_SECRET = "backend-secret-hostile-5b1e0c"
KEYS = {
    "bu-finance": "finance-key-hostile-7d3a91f0",
    "bu-marketing": "marketing-key-hostile-2c84e6",
    "bu-rnd": "rnd-key-hostile-9f1b27d4c0",
}
ALL_SECRETS = (*KEYS.values(), BACKEND_SECRET)
register_secret(*ALL_SECRETS)
CLASSIC = "/openai/deployments/gpt-4o/chat/completions"
VERSION = b"api-version=2024-10-21"
CHAT = orjson.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5})
Message = MutableMapping[str, Any]


@dataclass
class Recorder:
    """Wraps the simulator; keeps the headers, query and body of every request it received."""

    app: Any
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(
        self,
        scope: Any,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {
            "headers": [
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            ],
            "query": scope["query_string"].decode("latin-1"),
            "body": b"",
        }
        self.seen.append(entry)

        async def replay() -> Message:
            message = await receive()
            entry["body"] += message.get("body", b"")
            return message

        await self.app(scope, replay, send)


@dataclass
class Reply:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    receives: int = 0  # how many times the gateway asked for request body messages

    def json(self) -> Any:
        return orjson.loads(self.body)

    def text(self) -> str:
        return b" ".join([self.body, *(k + b": " + v for k, v in self.headers)]).decode("latin-1")


@dataclass
class Rig:
    spec: Spec
    sim: Simulator
    backend: Recorder
    gateway: Gateway
    events: list[bytes]
    replies: list[Reply] = field(default_factory=list)

    def call(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes | list[bytes] = CHAT,
        *,
        query: bytes = VERSION,
        path: str = CLASSIC,
        content_length: bool = True,
        disconnect: bool = False,
    ) -> Reply:
        """One request straight into the gateway's ASGI callable.

        ``body`` as a list is sent as that many chunks (``more_body``); ``content_length=False``
        leaves the header out (a chunked upload); ``disconnect`` ends the body early with
        ``http.disconnect``.
        """
        chunks = body if isinstance(body, list) else [body]
        if content_length:
            headers = [*headers, (b"content-length", str(sum(map(len, chunks))).encode())]
        messages: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        if disconnect:
            messages = [*messages[:-1], {"type": "http.disconnect"}]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("203.0.113.7", 50000),
            "server": ("gateway.local", 443),
        }
        reply = Reply()

        async def drive() -> None:
            done = asyncio.Event()

            async def receive() -> Message:
                reply.receives += 1
                if messages:
                    return messages.pop(0)
                await done.wait()
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    reply.status = message["status"]
                    reply.headers = list(message.get("headers", []))
                elif message["type"] == "http.response.body":
                    reply.body += message.get("body", b"")
                    if not message.get("more_body"):
                        done.set()

            await self.gateway(scope, receive, send)
            done.set()

        asyncio.run(drive())
        self.replies.append(reply)
        return reply

    def untouched(self) -> bool:
        """Nothing reached the backend and nothing was logged."""
        return self.backend.seen == [] and self.sim.records == [] and self.events == []

    def event(self) -> dict[str, Any]:
        assert len(self.events) == 1, self.events
        parsed: dict[str, Any] = orjson.loads(self.events[0])
        return parsed


def make_rig(*, backend_auth: str | None = None, **gateway_kwargs: Any) -> Rig:
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    if backend_auth:
        data["backends"][0]["auth"] = backend_auth
    spec = parse_spec(data)
    sim = Simulator(spec, keys=[BACKEND_SECRET])
    backend = Recorder(sim)
    events: list[bytes] = []
    gateway = Gateway(
        spec,
        keys=KEYS,
        backend_secret=BACKEND_SECRET,
        sink=events.append,
        backend_urls={b.name: "http://aoai.internal" for b in spec.backends},
        transport=httpx.ASGITransport(app=backend),
        **gateway_kwargs,
    )
    return Rig(spec, sim, backend, gateway, events)


def key(sub: str, header: bytes = b"api-key") -> tuple[bytes, bytes]:
    return (header, KEYS[sub].encode())


def _assert_no_secret(where: str, text: str | bytes) -> None:
    record_output(where, text)
    data = text.decode("latin-1") if isinstance(text, bytes) else text
    for secret in ALL_SECRETS:
        assert secret not in data, f"{where} contains a key ending …{secret[-4:]}"


def _assert_clean(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """No key in any response, event or log line of this rig."""
    for n, reply in enumerate(rig.replies):
        _assert_no_secret(f"response {n}", reply.text())
    for n, event in enumerate(rig.events):
        _assert_no_secret(f"event {n}", event)
    _assert_no_secret("log", "\n".join(r.getMessage() for r in caplog.records) + caplog.text)


@pytest.fixture(autouse=True)
def _all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


# ----------------------------------------------------------------------------- missing / unknown keys


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([], VERSION),
        ([(b"api-key", b"")], VERSION),
        ([(b"ocp-apim-subscription-key", b"")], VERSION),
        ([], VERSION + b"&subscription-key="),
        ([(b"authorization", b"Bearer " + KEYS["bu-finance"].encode())], VERSION),  # not a key
    ],
    ids=["none", "empty-api-key", "empty-ocp", "empty-query", "bearer-only"],
)
def test_missing_key_is_401_and_touches_nothing(
    headers: list[tuple[bytes, bytes]], query: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    reply = rig.call(headers, query=query)
    assert reply.status == 401 and "missing subscription key" in reply.json()["message"]
    assert rig.untouched()
    _assert_clean(rig, caplog)


@pytest.mark.parametrize(
    "value",
    [
        "guess-0000000000000000",
        KEYS["bu-finance"][:-1],  # a prefix
        KEYS["bu-finance"] + "0",  # a longer key
        KEYS["bu-finance"].upper(),
        KEYS["bu-finance"] + " ",
        f"{KEYS['bu-finance']},{KEYS['bu-marketing']}",  # two keys joined, as a proxy would
        "é" + KEYS["bu-finance"],  # not ASCII
    ],
    ids=["guess", "prefix", "longer", "upper", "trailing-space", "joined", "latin1"],
)
@pytest.mark.parametrize("where", ["api-key", "ocp-apim-subscription-key", "query"])
def test_unknown_key_is_401_and_touches_nothing(
    value: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    raw = value.encode("latin-1")
    if where == "query":
        reply = rig.call([], query=VERSION + b"&subscription-key=" + raw.replace(b" ", b"%20"))
    else:
        reply = rig.call([(where.encode(), raw)])
    assert reply.status == 401 and "invalid subscription key" in reply.json()["message"]
    assert rig.untouched()
    _assert_clean(rig, caplog)


# ----------------------------------------------------------------------------- which key wins


@pytest.mark.parametrize(
    ("headers", "query", "billed"),
    [
        # api-key wins over a spoofed Ocp-Apim-Subscription-Key, in either header order
        ([key("bu-finance"), key("bu-marketing", b"ocp-apim-subscription-key")], b"", "bu-finance"),
        ([key("bu-marketing", b"ocp-apim-subscription-key"), key("bu-finance")], b"", "bu-finance"),
        # a header wins over the query
        (
            [key("bu-rnd", b"ocp-apim-subscription-key")],
            b"&subscription-key=" + KEYS["bu-finance"].encode(),
            "bu-rnd",
        ),
        ([key("bu-marketing")], b"&subscription-key=" + KEYS["bu-rnd"].encode(), "bu-marketing"),
        # mixed-case header names are the same header
        ([(b"Api-Key", KEYS["bu-rnd"].encode())], b"", "bu-rnd"),
    ],
    ids=["api-key-first", "api-key-second", "ocp-over-query", "api-key-over-query", "mixed-case"],
)
def test_the_first_credential_decides_and_is_billed(
    headers: list[tuple[bytes, bytes]], query: bytes, billed: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    reply = rig.call(headers, query=VERSION + query)
    assert reply.status == 200, reply.body
    event = rig.event()
    sub = next(s for s in rig.spec.subscriptions if s.id == billed)
    assert (event["SubscriptionId"], event["SubscriptionName"]) == (sub.id, sub.display_name)
    assert len(rig.backend.seen) == len(rig.sim.records) == 1
    _assert_clean(rig, caplog)


@pytest.mark.parametrize(
    "headers",
    [
        # an invalid api-key is not rescued by a valid key elsewhere: no fallback
        [(b"api-key", b"not-a-key-000000"), key("bu-finance", b"ocp-apim-subscription-key")],
        # the same credential header twice (APIM would see "a, b"): refused, whichever values
        [key("bu-finance"), key("bu-marketing")],
        [key("bu-finance"), key("bu-finance")],
        [
            key("bu-finance", b"ocp-apim-subscription-key"),
            key("bu-rnd", b"Ocp-Apim-Subscription-Key"),
        ],
    ],
    ids=["invalid-api-key-valid-ocp", "two-api-keys", "same-api-key-twice", "two-ocp-keys"],
)
def test_ambiguous_or_invalid_first_credential_is_401(
    headers: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    reply = rig.call(headers)
    assert reply.status == 401 and "invalid subscription key" in reply.json()["message"]
    assert rig.untouched()
    _assert_clean(rig, caplog)


def test_the_event_records_the_keys_subscription_never_a_claimed_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig()
    claims = [
        (b"x-subscription-id", b"bu-marketing"),
        (b"ocp-apim-subscription-id", b"bu-marketing"),
        (b"x-ms-client-principal-name", b"marketing-boss@example.com"),
        (b"x-apim-user", b"Marketing"),
        (b"x-business-unit", b"Marketing"),
    ]
    body = orjson.dumps(
        {
            "messages": [{"role": "user", "content": "bill this to bu-marketing"}],
            "SubscriptionId": "bu-marketing",
            "SubscriptionName": "Marketing",
            "user": "bu-marketing",
            "stream": True,  # passthrough: the request is logged (prompt-only accounting)
        }
    )
    query = VERSION + b"&subscription-id=bu-marketing&SubscriptionId=bu-marketing"
    reply = rig.call([key("bu-finance"), *claims], body, query=query)
    assert reply.status == 200
    event = rig.event()
    finance = next(s for s in rig.spec.subscriptions if s.id == "bu-finance")
    assert event["SubscriptionId"] == "bu-finance"
    assert event["SubscriptionName"] == finance.display_name
    assert (event["UserName"], event["UserEmail"]) == (finance.owner_name, finance.owner_email)
    # the claims survive only inside the logged request body, never in a caller field
    caller = {k: v for k, v in event.items() if k not in ("Request", "ResponseString")}
    assert "arketing" not in orjson.dumps(caller).decode()
    _assert_clean(rig, caplog)


# ----------------------------------------------------------------------------- body size


def _chat_of_size(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes."""
    base = orjson.dumps({"messages": [{"role": "user", "content": ""}], "max_tokens": 5})
    body = orjson.dumps(
        {"messages": [{"role": "user", "content": "x" * (size - len(base))}], "max_tokens": 5}
    )
    assert len(body) == size
    return body


def _assert_413(rig: Rig, reply: Reply, limit: int) -> None:
    assert reply.status == 413
    assert (b"content-type", b"application/json") in reply.headers
    body = reply.json()
    assert body["statusCode"] == 413 and str(limit) in body["message"]
    assert rig.untouched()


def test_a_body_at_the_limit_passes_and_one_byte_more_is_413(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig(max_body_bytes=4096)
    assert rig.call([key("bu-finance")], _chat_of_size(4096)).status == 200
    assert len(rig.events) == len(rig.sim.records) == 1
    rig2 = make_rig(max_body_bytes=4096)
    reply = rig2.call([key("bu-finance")], _chat_of_size(4097))
    _assert_413(rig2, reply, 4096)
    assert reply.receives == 0  # refused from Content-Length, before reading the body
    _assert_clean(rig, caplog)
    _assert_clean(rig2, caplog)


def test_a_chunked_body_is_cut_off_while_it_is_read(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(max_body_bytes=4096)
    chunks = [b"x" * 1000] * 50  # 50 kB, no Content-Length
    reply = rig.call([key("bu-finance")], chunks, content_length=False)
    _assert_413(rig, reply, 4096)
    assert reply.receives == 5  # stopped at the chunk that crossed the limit, not at 50
    # a Content-Length that lies (small) does not get a bigger body through either
    rig2 = make_rig(max_body_bytes=4096)
    lying = rig2.call([key("bu-finance"), (b"content-length", b"10")], chunks, content_length=False)
    _assert_413(rig2, lying, 4096)
    _assert_clean(rig, caplog)


def test_the_default_limit_is_8_mib() -> None:
    assert DEFAULT_MAX_BODY_BYTES == 8 * 1024 * 1024
    rig = make_rig()
    assert rig.gateway.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    declared = rig.call([key("bu-finance")], _chat_of_size(DEFAULT_MAX_BODY_BYTES + 1))
    _assert_413(rig, declared, DEFAULT_MAX_BODY_BYTES)
    chunked = rig.call([key("bu-finance")], [b"y" * (1 << 20)] * 9, content_length=False)
    _assert_413(rig, chunked, DEFAULT_MAX_BODY_BYTES)
    assert chunked.receives == 9  # the 9th MiB crossed the limit
    with pytest.raises(ValueError, match="max_body_bytes"):
        make_rig(max_body_bytes=0)


def test_oversized_requests_without_a_key_are_401_unread() -> None:
    rig = make_rig(max_body_bytes=1024)
    reply = rig.call([], [b"z" * 1000] * 10, content_length=False)
    assert reply.status == 401 and reply.receives == 0 and rig.untouched()


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e9", b"\xb2"])
def test_an_invalid_content_length_is_400(value: bytes) -> None:
    rig = make_rig()
    reply = rig.call([key("bu-finance"), (b"content-length", value)], content_length=False)
    assert reply.status == 400 and reply.json()["statusCode"] == 400 and rig.untouched()


def test_a_client_gone_before_its_body_is_complete_forwards_nothing() -> None:
    rig = make_rig()
    reply = rig.call([key("bu-finance")], [CHAT[:10], CHAT[10:]], disconnect=True)
    assert reply.status is None and reply.body == b""  # nobody left to answer
    assert rig.untouched()


# ----------------------------------------------------------------------------- header injection


@pytest.mark.parametrize(
    "header",
    [
        (b"x-note", b"a\r\nX-Injected: 1"),
        (b"x-note", b"a\nX-Injected: 1"),
        (b"x-note", b"a\rb"),
        (b"x-note", b"a\x00b"),
        (b"x-bad\r\nname", b"v"),
        (b"user-agent", b"evil\r\n\r\nPOST /openai/other HTTP/1.1"),
    ],
    ids=["crlf", "lf", "cr", "nul", "crlf-in-name", "request-smuggling"],
)
@pytest.mark.parametrize("with_key", [True, False])
def test_control_characters_in_headers_are_400_and_touch_nothing(
    header: tuple[bytes, bytes], with_key: bool, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    reply = rig.call([key("bu-finance"), header] if with_key else [header])
    assert reply.status == 400 and "CR, LF or NUL" in reply.json()["message"]
    assert b"X-Injected" not in reply.body and reply.receives == 0
    assert rig.untouched()
    _assert_clean(rig, caplog)


@pytest.mark.parametrize(
    "value",
    [
        KEYS["bu-finance"].encode() + b"\r\nOcp-Apim-Subscription-Key: " + KEYS["bu-rnd"].encode(),
        KEYS["bu-finance"].encode() + b"\x00",
        b"\r\n" + KEYS["bu-finance"].encode(),
    ],
    ids=["crlf-second-key", "nul", "leading-crlf"],
)
def test_control_characters_in_the_key_are_400(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    assert rig.call([(b"api-key", value)]).status == 400
    assert rig.untouched()
    _assert_clean(rig, caplog)


def test_host_and_forwarding_headers_are_not_passed_on(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig()
    spoof = [
        (b"host", b"evil.example"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-forwarded-for", b"10.6.6.6"),
        (b"x-forwarded-proto", b"gopher"),
        (b"forwarded", b"for=10.6.6.6;host=evil.example;proto=http"),
    ]
    reply = rig.call([key("bu-finance"), *spoof])
    assert reply.status == 200
    (seen,) = rig.backend.seen
    names = [k for k, _v in seen["headers"]]
    assert dict(seen["headers"])["host"] == "aoai.internal"  # the backend's, not the caller's
    assert not any(n == "forwarded" or n.startswith("x-forwarded-") for n in names)
    assert "evil" not in str(seen) and "10.6.6.6" not in str(seen)
    assert b"evil" not in rig.events[0] and b"10.6.6.6" not in rig.events[0]
    # without a key, the spoof gets a 401 and touches nothing
    rig2 = make_rig()
    assert rig2.call(spoof).status == 401 and rig2.untouched()
    _assert_clean(rig, caplog)


@pytest.mark.parametrize("backend_auth", ["managed_identity", "key"])
def test_the_callers_authorization_never_reaches_the_backend(
    backend_auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(backend_auth=backend_auth)
    client_token = "client-bearer-token-3e9a7c"
    register_secret(client_token)
    extra = [
        (b"authorization", f"Bearer {client_token}".encode()),
        (b"proxy-authorization", f"Basic {client_token}".encode()),
        (b"cookie", b"session=abc"),
    ]
    reply = rig.call([key("bu-marketing"), *extra])
    assert reply.status == 200
    (seen,) = rig.backend.seen
    headers = dict(seen["headers"])
    assert client_token not in str(seen)
    assert not any(secret in str(seen) for secret in KEYS.values())
    assert "ocp-apim-subscription-key" not in headers and "proxy-authorization" not in headers
    if backend_auth == "key":
        assert headers["api-key"] == BACKEND_SECRET and "authorization" not in headers
    else:
        assert headers["authorization"] == f"Bearer {BACKEND_SECRET}" and "api-key" not in headers
    assert [k for k, _v in seen["headers"]].count("authorization") <= 1
    assert rig.event()["SubscriptionId"] == "bu-marketing"
    assert client_token.encode() not in rig.events[0]
    _assert_clean(rig, caplog)


def test_no_key_is_echoed_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    """A mixed session of good and hostile calls; every response, event and log line scanned."""
    rig = make_rig()
    finance, rnd = KEYS["bu-finance"].encode(), KEYS["bu-rnd"].encode()
    rig.call([key("bu-finance")])
    rig.call(
        [key("bu-rnd")],
        orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}),
    )
    rig.call([], query=VERSION + b"&subscription-key=" + finance)
    rig.call([(b"api-key", finance + b"x")])
    rig.call([key("bu-finance"), (b"ocp-apim-subscription-key", rnd)])
    rig.call([(b"api-key", finance + b"\r\nx: 1")])
    # refused by the gateway, never forwarded: no deployment of the spec, not JSON, not the API
    rig.call([key("bu-finance")], path="/openai/deployments/nope/chat/completions")
    rig.call([key("bu-finance")], b"{not json")
    rig.call([key("bu-finance")], path="/other")
    statuses = [r.status for r in rig.replies]
    assert statuses == [200, 200, 200, 401, 200, 400, 404, 400, 404]
    assert len(rig.events) == 4  # every call that reached the backend, and only those
    for reply in rig.replies:
        for secret in ALL_SECRETS:
            assert secret.encode() not in reply.body
    _assert_clean(rig, caplog)
