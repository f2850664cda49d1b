"""The APIM-emulating gateway, in one process: client → gateway → simulator through httpx's ASGI
transport (no sockets). Streaming timing is tested over real sockets in test_local_stack.py.

The backend is the real simulator, wrapped in a recorder that keeps what the gateway sent it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from secrets_registry import record_output, register_secret
from sqlalchemy.engine import Engine

from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT, V2_FIELDS, load_v2_schema
from aoai_helpers.core.shrink import shrink_request
from aoai_helpers.local.gateway import EVENT_BUDGET, BackendCut, Gateway, strip_usage_chunk
from aoai_helpers.local.llm_records import Exchange, llm_log_records
from aoai_helpers.local.simulator import Simulator
from aoai_helpers.pipeline.ingest import Ingestor, RawEvent
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
BACKEND_SECRET = "backend-secret-0123456789"
KEYS = {"bu-finance": "finance-key-aaaaaaaaaaaa", "bu-marketing": "marketing-key-bbbbbbbbbb"}
register_secret(BACKEND_SECRET, *KEYS.values())

CHAT = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarise the travel policy in two sentences."},
    ],
    "max_tokens": 20,
}


@dataclass
class Recorder:
    """An ASGI wrapper keeping each request the backend received (headers, path, body)."""

    app: Any
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def replay() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        entry: dict[str, Any] = {
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": headers,
        }
        self.seen.append(entry)
        await self.app(scope, replay, send)
        entry["body"] = orjson.loads(b"".join(chunks)) if chunks and b"".join(chunks) else None
        return None


@dataclass
class Rig:
    spec: Spec
    sim: Simulator
    backend: Recorder
    gateway: Gateway
    events: list[bytes]

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                response = await client.request(method, url, **kwargs)
                await response.aread()
                return response

        return asyncio.run(go())

    def event(self) -> dict[str, Any]:
        assert len(self.events) == 1, self.events
        parsed: dict[str, Any] = orjson.loads(self.events[0])
        return parsed


def make_rig(capture: str = "passthrough", spec: Spec | None = None, **gateway_kwargs: Any) -> Rig:
    spec = spec or load_spec(ROOT / "examples" / "gateway.yaml")
    sim = Simulator(spec, keys=[BACKEND_SECRET])
    backend = Recorder(sim)
    events: list[bytes] = []

    def sink(body: bytes) -> None:
        events.append(body)
        record_output("test_gateway event", body)

    gateway = Gateway(
        spec,
        keys=KEYS,
        backend_secret=BACKEND_SECRET,
        sink=sink,
        backend_urls={b.name: "http://aoai" for b in spec.backends},
        capture=capture,  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=backend),
        **gateway_kwargs,
    )
    return Rig(spec, sim, backend, gateway, events)


CLASSIC = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def _validate(event: dict[str, Any]) -> None:
    jsonschema.validate(event, load_v2_schema())
    assert tuple(event) == V2_FIELDS


# ------------------------------------------------------------------------------- authentication


def test_missing_key_is_401_and_touches_nothing() -> None:
    rig = make_rig()
    r = rig.call("POST", CLASSIC, json=CHAT)
    assert r.status_code == 401
    assert "missing subscription key" in r.json()["message"]
    assert rig.backend.seen == [] and rig.events == [] and rig.sim.records == []


@pytest.mark.parametrize("header", ["api-key", "Ocp-Apim-Subscription-Key"])
def test_wrong_key_is_401_and_touches_nothing(header: str) -> None:
    rig = make_rig()
    r = rig.call("POST", CLASSIC, json=CHAT, headers={header: KEYS["bu-finance"][:-1] + "x"})
    assert r.status_code == 401
    assert "invalid subscription key" in r.json()["message"]
    assert rig.backend.seen == [] and rig.events == []


@pytest.mark.parametrize("where", ["api-key", "Ocp-Apim-Subscription-Key", "query"])
def test_the_callers_key_is_swapped_for_the_backend_credential(where: str) -> None:
    rig = make_rig()
    key = KEYS["bu-marketing"]
    if where == "query":
        r = rig.call("POST", CLASSIC + f"&subscription-key={key}", json=CHAT)
    else:
        r = rig.call(
            "POST", CLASSIC, json=CHAT, headers={where: key, "Authorization": "Bearer client"}
        )
    assert r.status_code == 200, r.text
    seen = rig.backend.seen[0]
    sent = " ".join([seen["query"], *seen["headers"].values()])
    assert key not in sent and "client" not in sent
    # the sample backend authenticates with its managed identity: a bearer token, no api-key
    assert seen["headers"]["authorization"] == f"Bearer {BACKEND_SECRET}"
    assert "api-key" not in seen["headers"] and "ocp-apim-subscription-key" not in seen["headers"]
    assert "subscription-key" not in seen["query"] and "api-version=2024-10-21" in seen["query"]
    assert rig.event()["SubscriptionId"] == "bu-marketing"


def test_key_auth_backend_gets_an_api_key() -> None:
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    data["backends"][0]["auth"] = "key"
    rig = make_rig(spec=parse_spec(data))
    assert (
        rig.call("POST", CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]}).status_code
        == 200
    )
    assert rig.backend.seen[0]["headers"]["api-key"] == BACKEND_SECRET
    assert "authorization" not in rig.backend.seen[0]["headers"]


# ------------------------------------------------------------------------------- events


def test_non_streamed_call_logs_reported_usage_and_no_text() -> None:
    rig = make_rig()
    r = rig.call("POST", CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]})
    body = r.json()
    event = rig.event()
    _validate(event)
    assert event["Usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert event["Usage"]["completion_tokens"] == body["usage"]["completion_tokens"]
    assert event["Usage"]["total_tokens"] == body["usage"]["total_tokens"]
    assert event["Usage"] == rig.sim.records[0].usage
    assert event["Model"] == "gpt-4o-2024-11-20" == body["model"]
    assert event["Request"] is None and event["ResponseString"] is None  # no prompt text
    assert (event["Operation"], event["OperationId"]) == ("chat", "ChatCompletions_Create")
    assert (event["DeploymentName"], event["ApiVersion"]) == ("gpt-4o", "2024-10-21")
    assert (event["IsStreaming"], event["StatusCode"]) == (False, 200)
    assert event["SubscriptionName"] == "Finance"
    assert event["ProductName"] == rig.spec.product.display_name
    assert event["GatewayServiceName"] == rig.spec.apim.service_name
    assert event["ExecTimeUTC"].endswith("Z") and len(event["ExecTimeUTC"]) == 24


def test_passthrough_stream_is_untouched_and_logged_for_prompt_only() -> None:
    rig = make_rig("passthrough")
    request = {**CHAT, "stream": True}
    r = rig.call("POST", CLASSIC, json=request, headers={"api-key": KEYS["bu-finance"]})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")
    assert rig.backend.seen[0]["body"] == request  # nothing injected
    assert '"usage"' not in r.text
    event = rig.event()
    _validate(event)
    assert event["Usage"] is None and event["Model"] is None and event["IsStreaming"] is True
    assert event["Request"] == request  # needed to count the prompt


def test_buffered_capture_injects_include_usage_and_logs_the_numbers() -> None:
    rig = make_rig("buffered")
    request = {**CHAT, "stream": True}
    r = rig.call("POST", CLASSIC, json=request, headers={"api-key": KEYS["bu-finance"]})
    sent = rig.backend.seen[0]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == request["messages"]
    event = rig.event()
    _validate(event)
    assert event["Usage"] == rig.sim.records[0].usage
    assert event["Model"] == "gpt-4o-2024-11-20"
    assert event["Request"] is None and event["ResponseString"] is None
    assert r.text.rstrip().endswith("data: [DONE]")


def _chunks(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[5:])
        for line in text.splitlines()
        if line.startswith("data:") and line.strip() != "data: [DONE]"
    ]


def test_buffered_capture_hides_the_usage_chunk_it_asked_for() -> None:
    """Clients that index ``choices[0]`` of every chunk keep working in buffered mode."""
    rig = make_rig("buffered")
    r = rig.call(
        "POST", CLASSIC, json={**CHAT, "stream": True}, headers={"api-key": KEYS["bu-finance"]}
    )
    chunks = _chunks(r.text)
    assert chunks and not any(isinstance(c.get("usage"), dict) for c in chunks)
    assert all(c["choices"] for c in chunks if "prompt_filter_results" not in c)
    assert rig.event()["Usage"] == rig.sim.records[0].usage  # read before it was removed
    # a client that asked for it itself gets it
    own = make_rig("buffered")
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = own.call("POST", CLASSIC, json=request, headers={"api-key": KEYS["bu-finance"]})
    (usage_chunk,) = [c for c in _chunks(r.text) if c.get("usage")]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0


def test_strip_usage_chunk_keeps_every_other_byte() -> None:
    body = (
        b'data: {"choices":[],"prompt_filter_results":[]}\r\n\r\n'
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        b": a comment\n\n"
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert strip_usage_chunk(body) == (
        b'data: {"choices":[],"prompt_filter_results":[]}\r\n\r\n'
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        b": a comment\n\n"
        b"data: [DONE]\n\n"
    )
    kept = b'data: {"choices":[{"index":0}],"usage":{"total_tokens":2}}\n\ndata: [DONE]\n\n'
    assert (
        strip_usage_chunk(kept) == kept
    )  # usage on a chunk with choices: not the include_usage one
    assert strip_usage_chunk(b"data: not json usage\n\n") == b"data: not json usage\n\n"


def test_passthrough_usage_streams_with_the_usage_chunk_the_client_sees() -> None:
    rig = make_rig("passthrough_usage")
    r = rig.call(
        "POST", CLASSIC, json={**CHAT, "stream": True}, headers={"api-key": KEYS["bu-finance"]}
    )
    assert rig.backend.seen[0]["body"]["stream_options"] == {"include_usage": True}
    (usage_chunk,) = [c for c in _chunks(r.text) if c.get("usage")]
    assert usage_chunk["choices"] == []  # the documented trade-off: one extra final chunk
    event = rig.event()
    assert event["Usage"] is None and event["Request"] is not None  # the policy never reads it


def test_the_language_model_sink_sees_each_served_call_as_it_went_by() -> None:
    seen: list[Exchange] = []
    rig = make_rig("passthrough", llm_sink=seen.append)
    key = {"api-key": KEYS["bu-finance"]}
    streamed = rig.call("POST", CLASSIC, json={**CHAT, "stream": True}, headers=key)
    rig.call("POST", CLASSIC, json=CHAT, headers=key)
    first, second = seen
    assert first.streaming and first.usage is None and first.response_text == streamed.text
    assert (
        first.request == {**CHAT, "stream": True}
        and first.request_id == orjson.loads(rig.events[0])["RequestId"]
    )
    assert second.usage == rig.sim.records[1].usage and not second.streaming
    (record,) = llm_log_records(first, rig.spec.deployment_models())
    served = rig.sim.records[0].usage
    assert served is not None
    assert (record.prompt_tokens, record.completion_tokens) == (
        served["prompt_tokens"],
        served["completion_tokens"],
    )
    assert record.correlation_id == first.request_id and record.model_name == "gpt-4o-2024-11-20"


def test_buffered_capture_keeps_the_clients_own_stream_options() -> None:
    rig = make_rig("buffered")
    request = {**CHAT, "stream": True, "stream_options": {"include_obfuscation": False}}
    rig.call("POST", CLASSIC, json=request, headers={"api-key": KEYS["bu-finance"]})
    assert rig.backend.seen[0]["body"]["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


def test_buffered_capture_does_not_inject_for_an_api_version_not_configured() -> None:
    rig = make_rig("buffered")
    url = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
    rig.call("POST", url, json={**CHAT, "stream": True}, headers={"api-key": KEYS["bu-finance"]})
    assert "stream_options" not in rig.backend.seen[0]["body"]
    event = rig.event()
    assert event["Usage"] is None and event["Request"] is not None  # estimated at ingest


def test_v1_paths_take_the_deployment_from_the_body() -> None:
    rig = make_rig("buffered")
    body = {"model": "gpt-4o-mini", "input": "Hello there", "stream": True}
    r = rig.call("POST", "/openai/v1/responses", json=body, headers={"api-key": KEYS["bu-finance"]})
    assert r.status_code == 200
    event = rig.event()
    _validate(event)
    assert (event["Operation"], event["OperationId"]) == ("responses", "v1_responses")
    assert (event["DeploymentName"], event["ApiVersion"]) == ("gpt-4o-mini", None)
    assert event["Usage"] == rig.sim.records[0].usage  # from response.completed
    assert (
        "stream_options" not in rig.backend.seen[0]["body"]
    )  # Responses streams carry usage anyway


def test_backend_errors_are_logged_with_their_status_and_no_usage() -> None:
    spec = parse_spec(
        {
            **load_spec(ROOT / "examples" / "gateway.yaml").model_dump(),
            "local": {
                "simulator": {
                    "faults": [{"kind": "rate_limit", "every": 1, "retry_after_ms": 1500}]
                }
            },
        }
    )
    rig = make_rig(spec=spec)
    r = rig.call("POST", CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]})
    assert r.status_code == 429 and r.headers["retry-after-ms"] == "1500"
    event = rig.event()
    _validate(event)
    assert (event["StatusCode"], event["Usage"], event["Request"]) == (429, None, None)


def test_an_unreachable_backend_is_a_500_and_an_event() -> None:
    spec = load_spec(ROOT / "examples" / "gateway.yaml")
    events: list[bytes] = []
    gateway = Gateway(
        spec,
        keys=KEYS,
        backend_secret=BACKEND_SECRET,
        sink=events.append,
        backend_urls={b.name: "http://127.0.0.1:9" for b in spec.backends},  # discard port: refused
    )

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gw"
        ) as c:
            response = await c.post(CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]})
        await gateway.aclose()
        return response

    assert asyncio.run(go()).status_code == 500
    event = orjson.loads(events[0])
    assert event["StatusCode"] == 500 and event["Usage"] is None


def test_payload_capture_logs_request_and_response() -> None:
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    data["capture"]["payload"] = True
    rig = make_rig(spec=parse_spec(data))
    r = rig.call("POST", CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]})
    event = rig.event()
    _validate(event)
    assert event["Request"] == CHAT and event["ResponseString"] == r.text


def test_a_huge_prompt_stays_far_below_the_logger_limit() -> None:
    rig = make_rig("passthrough")
    huge = {"messages": [{"role": "user", "content": "word " * 300_000}], "stream": True}
    r = rig.call("POST", CLASSIC, json=huge, headers={"api-key": KEYS["bu-finance"]})
    assert r.status_code == 200
    raw = rig.events[0]
    assert len(raw) < EVENT_BUDGET < LOG_TO_EVENTHUB_LIMIT
    event = orjson.loads(raw)
    _validate(event)
    # the whole request's size, proven: 1 message, 2 non-empty strings, 1.5 M characters
    assert event["Request"]["_truncated"] == {"items": 1, "strings": 2, "chars": 1_500_004}
    assert event["Request"]["messages"][0]["role"] == "user"


def test_shrink_request_keeps_small_requests_and_the_shape_of_big_ones() -> None:
    small = {"messages": [{"role": "user", "content": "hi"}]}
    assert shrink_request(small, 1000) is small
    big = {"input": ["a" * 5000, "b" * 3000, "c" * 10], "model": "m"}
    out = shrink_request(big, 2000)
    assert len(orjson.dumps(out)) <= 2000
    assert out["model"] == "m" and out["input"][2] == "c" * 10
    assert out["_truncated"] == {"items": 3, "strings": 3, "chars": 8010}
    a, b = out["input"][0], out["input"][1]
    assert a.endswith("…") and b.endswith("…") and len(a) == len(b) > 900  # cut evenly
    assert big["input"][0] == "a" * 5000  # the original is not modified


def test_unknown_paths_are_404_without_an_event() -> None:
    rig = make_rig()
    r = rig.call("POST", "/other/thing", json={}, headers={"api-key": KEYS["bu-finance"]})
    assert r.status_code == 404 and rig.events == [] and rig.backend.seen == []


def test_events_ingest_as_reported_and_prompt_only(
    engine: Engine, token_rows: Callable[[Engine], list[dict[str, Any]]]
) -> None:
    rig = make_rig("passthrough")
    headers = {"api-key": KEYS["bu-finance"]}
    rig.call("POST", CLASSIC, json=CHAT, headers=headers)
    rig.call("POST", CLASSIC, json={**CHAT, "stream": True}, headers=headers)
    result = Ingestor(engine, deployment_models=rig.spec.deployment_models()).ingest_batch(
        [RawEvent(e, "test") for e in rig.events]
    )
    assert (result.stored, result.prompt_only, result.dead_lettered) == (2, 1, 0)
    rows = token_rows(engine)
    assert [r["UsageSource"] for r in rows] == ["reported", "prompt_only"]
    # the same counter on both sides: the prompt-only estimate equals what the backend consumed
    assert rows[1]["PromptTokens"] == rig.sim.records[1].usage["prompt_tokens"]  # type: ignore[index]
    assert rows[1]["CompletionTokens"] == 0
    assert rows[0]["ModelName"] == rows[1]["ModelName"]


def _backend_gateway(transport: httpx.AsyncBaseTransport | None = None, **kwargs: Any) -> Any:
    spec = load_spec(ROOT / "examples" / "gateway.yaml")
    events: list[bytes] = []
    gateway = Gateway(
        spec,
        keys=KEYS,
        backend_secret=BACKEND_SECRET,
        sink=events.append,
        transport=transport,
        **kwargs,
    )
    return gateway, events


def _post(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gw"
        ) as c:
            try:
                return await c.post(CLASSIC, json=body, headers={"api-key": KEYS["bu-finance"]})
            finally:
                await gateway.aclose()

    return asyncio.run(go())


def test_a_backend_that_never_answers_is_a_504_and_an_event() -> None:
    """A real loopback socket that accepts the connection and never answers: the gateway's
    timeout (APIM: forward-request's, LastError.Reason Timeout) → 504 to the client and in the
    event, as the policy's on-error logs and answers it; never billed."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        spec = load_spec(ROOT / "examples" / "gateway.yaml")
        for stream in (False, True):
            events: list[bytes] = []
            gateway = Gateway(
                spec,
                keys=KEYS,
                backend_secret=BACKEND_SECRET,
                sink=events.append,
                backend_urls={b.name: f"http://127.0.0.1:{port}" for b in spec.backends},
                timeout=0.3,
            )
            r = _post(gateway, {**CHAT, "stream": stream})
            assert r.status_code == 504, stream
            assert r.json()["statusCode"] == 504
            event = orjson.loads(events[0])
            _validate(event)
            assert (event["StatusCode"], event["Usage"], event["Request"]) == (504, None, None)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (httpx.ConnectError("refused"), 500),
        (httpx.ConnectTimeout("not established"), 500),
        (httpx.ReadTimeout("no answer"), 504),
        (httpx.RemoteProtocolError("dropped"), 500),
    ],
)
def test_backend_failures_are_never_logged_as_a_success(error: Exception, status: int) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    gateway, events = _backend_gateway(httpx.MockTransport(fail))
    r = _post(gateway, CHAT)
    assert r.status_code == status
    event = orjson.loads(events[0])
    assert (event["StatusCode"], event["Usage"], event["Request"]) == (status, None, None)


class _CutStream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("backend went away")


@pytest.mark.parametrize("capture", ["passthrough", "buffered"])
@pytest.mark.parametrize("relayed", [False, True])
def test_a_cut_stream_is_billed_where_its_status_reached_the_client(
    capture: str, relayed: bool
) -> None:
    chunks = [b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'] if relayed else []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_CutStream(chunks)
        )

    gateway, events = _backend_gateway(httpx.MockTransport(answer), capture=capture)
    if capture == "passthrough":  # the headers went out: the client's connection is dropped
        with pytest.raises(BackendCut):
            _post(gateway, {**CHAT, "stream": True})
    else:  # buffered: nothing was sent yet, the client gets the 500
        assert _post(gateway, {**CHAT, "stream": True}).status_code == 500
    event = orjson.loads(events[0])
    # pass-through: the backend's 200 had reached the client (as APIM logs it when the headers
    # arrive), so the prompt is billed, bytes relayed or not; buffered: not served, 500
    want = 200 if capture == "passthrough" else 500
    assert event["StatusCode"] == want and event["Usage"] is None


def test_owners_are_not_logged_on_the_consumption_tier() -> None:
    """APIM fills context.User from the subscription's owner; Consumption has no users, so
    the policy logs null there and the local gateway does the same (Spec.owners_logged)."""
    data = load_spec(ROOT / "examples" / "gateway.yaml").model_dump()
    for sub in data["subscriptions"]:
        sub.pop("token_limit", None)  # not on Consumption
    for sku, logged in (("Consumption", False), ("StandardV2", True), (None, True)):
        data["apim"]["sku"] = sku
        spec = parse_spec(data)
        assert spec.owners_logged() is logged
        rig = make_rig(spec=spec)
        rig.call("POST", CLASSIC, json=CHAT, headers={"api-key": KEYS["bu-finance"]})
        event = rig.event()
        _validate(event)
        owner = ("Ana Silva", "ana.silva@contoso.com") if logged else (None, None)
        assert (event["UserName"], event["UserEmail"]) == owner, sku
