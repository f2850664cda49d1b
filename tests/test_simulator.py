"""The AOAI simulator: raw shapes in process (httpx's ASGI transport, or the ASGI callable
driven by hand for timing and disconnects), and the real ``openai`` SDK over a loopback
socket (uvicorn in a thread) for every operation, streamed and not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from secrets_registry import register_secret

from aoai_helpers.core.chat_format import TEXT_REPLY_FRAME
from aoai_helpers.core.decoding import FORCED_CALL_FRAME
from aoai_helpers.core.tokens import call_framing, count_completion_text, count_prompt, count_text
from aoai_helpers.core.tool_schema import render_calls
from aoai_helpers.core.usage import outputs_from_body, summarize_stream
from aoai_helpers.local.replies import PROMPT_FILTER_RESULTS, VOCABULARY, make_plan
from aoai_helpers.local.reply_types import reply_words
from aoai_helpers.local.simulator import (
    PromptCache,
    SimCall,
    Simulator,
    StreamCutError,
    StreamShape,
)
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
KEY = "sim-key-0123456789"
register_secret(KEY)
API_VERSION = "2024-10-21"
MODELS = {
    "gpt-4o": "gpt-4o-2024-11-20",
    "gpt-35-turbo": "gpt-35-turbo-0125",
    "text-embedding-3-small": "text-embedding-3-small",
    "text-embedding-3-large": "text-embedding-3-large",
    "o3-mini": "o3-mini-2025-01-31",
    "gpt-5": "gpt-5-2025-08-07",
}
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the travel policy in two sentences."},
]
CHAT: dict[str, Any] = {"messages": MESSAGES}
CHAT_URL = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
        },
    },
}


def make_spec(**simulator: Any) -> Spec:
    return parse_spec(
        {
            "apim": {"resource_group": "rg-test", "service_name": "apim-test"},
            "backends": [{"endpoint": "https://aoai.openai.azure.com", "deployments": MODELS}],
            "subscriptions": [{"id": "bu-a", "display_name": "A", "business_unit": "A"}],
            "event_hub": {"namespace": "evhns", "name": "hub"},
            "local": {"simulator": {"max_reply_tokens": 12, **simulator}},
        }
    )


# ----------------------------------------------------------------------------- helpers


def post(
    sim: Simulator, url: str, body: Any, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST through httpx's ASGI transport (the whole body is buffered before returning)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=sim)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs = {"api-key": KEY, "content-type": "application/json"} | (headers or {})
            return await client.post(url, content=content, headers=hdrs)

    return asyncio.run(go())


def sse(text: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; ``[DONE]`` stays a string."""
    assert text.endswith("\n\n")
    out: list[tuple[str | None, Any]] = []
    for block in text[:-2].split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = lines["data"]
        out.append((lines.get("event"), data if data == "[DONE]" else json.loads(data)))
    return out


def usage5(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }


class Clock:
    """A fake ``sleep`` that logs what was asked and only yields to the event loop."""

    def __init__(self, log: list[tuple[str, Any]] | None = None) -> None:
        self.log = log if log is not None else []

    @property
    def slept(self) -> list[float]:
        return [s for kind, s in self.log if kind == "sleep"]

    async def __call__(self, seconds: float) -> None:
        self.log.append(("sleep", seconds))
        for _ in range(3):
            await asyncio.sleep(0)


async def drive(
    sim: Simulator,
    body: dict[str, Any],
    log: list[tuple[str, Any]],
    *,
    disconnect_after: int = -1,
    deployment: str = "gpt-4o",
) -> None:
    """Call the ASGI app by hand, logging each message sent; the client may leave mid-body."""
    path = f"/openai/deployments/{deployment}/chat/completions"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": f"api-version={API_VERSION}".encode(),
        "headers": [(b"api-key", KEY.encode()), (b"content-type", b"application/json")],
    }
    gone = asyncio.Event()
    pending = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> MutableMapping[str, Any]:
        if pending:
            return pending.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        log.append(("send", message))
        bodies = sum(kind == "send" and m["type"] == "http.response.body" for kind, m in log)
        if bodies == disconnect_after or not message.get("more_body", True):
            gone.set()

    await sim(scope, receive, send)


def sent_body(log: list[tuple[str, Any]]) -> str:
    return b"".join(m["body"] for kind, m in log if kind == "send" and "body" in m).decode()


def sent_frames(log: list[tuple[str, Any]]) -> list[tuple[str | None, Any]]:
    return sse(sent_body(log))


def long_messages(tag: str, words: int = 1400) -> list[dict[str, Any]]:
    """A conversation of over 1024 prompt tokens (one-token words), its system text per ``tag``."""
    text = "".join(reply_words(random.Random(tag), words))
    return [{"role": "system", "content": text}, {"role": "user", "content": f"Question {tag}?"}]


def cacheable(tokens: int) -> int:
    """What the prompt cache serves of a ``tokens``-long prefix: 128-token steps from 1024."""
    return 0 if tokens < 1024 else 1024 + (tokens - 1024) // 128 * 128


# ----------------------------------------------------------------------------- loopback server


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a pre-bound loopback socket in a thread; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Simulator, str]]:
    """One simulator (no latency, no faults) on a loopback socket for the SDK tests."""
    sim = Simulator(make_spec(), keys=[KEY])
    with serve(sim) as url:
        yield sim, url


def azure(url: str, **kwargs: Any) -> openai.AzureOpenAI:
    options: dict[str, Any] = {"api_key": KEY, "max_retries": 0} | kwargs
    return openai.AzureOpenAI(azure_endpoint=url, api_version=API_VERSION, **options)


def v1(url: str, **kwargs: Any) -> openai.OpenAI:
    options: dict[str, Any] = {"api_key": KEY, "max_retries": 0} | kwargs
    return openai.OpenAI(base_url=f"{url}/openai/v1/", **options)


def client_for(kind: str, url: str, **kwargs: Any) -> openai.OpenAI:
    return azure(url, **kwargs) if kind == "azure" else v1(url, **kwargs)


# ----------------------------------------------------------------------------- raw shapes


def test_vocabulary_words_are_one_token_each_in_both_encodings() -> None:
    for model in ("gpt-4o", "gpt-4"):
        for word in VOCABULARY:
            assert count_text(" " + word, model) == 1 and count_text(word.capitalize(), model) == 1


def test_non_streamed_chat_has_azure_shape_headers_and_counted_usage() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    r = post(sim, CHAT_URL, CHAT)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    for name in ("apim-request-id", "x-request-id"):
        assert len(r.headers[name]) == 36
    assert int(r.headers["x-ratelimit-remaining-requests"]) > 0
    assert int(r.headers["x-ratelimit-remaining-tokens"]) > 0
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-2024-11-20" and body["system_fingerprint"].startswith("fp_")
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    [choice] = body["choices"]
    assert choice["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    prompt = count_prompt("chat", CHAT, "gpt-4o-2024-11-20").tokens
    assert count_text(text, "gpt-4o") == 12 and len(text.split()) == 12
    assert body["usage"]["prompt_tokens"] == prompt
    assert body["usage"]["completion_tokens"] == 12 and body["usage"]["total_tokens"] == prompt + 12
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert sim.records == [
        SimCall(
            body["id"], "gpt-4o", "gpt-4o-2024-11-20", "chat", False, 200, usage5(prompt, 12), False
        )
    ]
    assert post(sim, CHAT_URL, CHAT).json()["choices"][0]["message"]["content"] == text


def test_reply_length_follows_the_request_limit() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    for key in ("max_tokens", "max_completion_tokens"):
        choice = post(sim, CHAT_URL, CHAT | {key: 5}).json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert count_text(choice["message"]["content"], "gpt-4o") == 5
    assert (
        post(sim, CHAT_URL, CHAT | {"max_tokens": 50}).json()["choices"][0]["finish_reason"]
        == "stop"
    )


def test_streamed_chat_frames_match_azure() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    r = post(sim, CHAT_URL, CHAT | {"stream": True, "n": 2})
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = sse(r.text)
    assert frames[-1] == (None, "[DONE]") and all(name is None for name, _ in frames)
    chunks = [data for _, data in frames[:-1]]
    first = chunks[0]
    assert (first["id"], first["object"], first["model"], first["created"], first["choices"]) == (
        "",
        "",
        "",
        0,
        [],
    )
    assert (
        first["prompt_filter_results"][0]["content_filter_results"]["jailbreak"]["detected"]
        is False
    )
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage key at all
    roles = chunks[1:3]
    assert [c["choices"][0]["index"] for c in roles] == [0, 1]
    for c in roles:
        assert c["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
        assert c["choices"][0]["content_filter_results"] == {}
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 24
    assert all(
        c["choices"][0]["content_filter_results"]["violence"]["filtered"] is False for c in content
    )
    finals = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [(f["index"], f["finish_reason"], f["delta"]) for f in finals] == [
        (0, "stop", {}),
        (1, "stop", {}),
    ]
    assert {c["id"] for c in chunks[1:]} == {sim.records[0].response_id}
    assert {c["model"] for c in chunks[1:]} == {"gpt-4o-2024-11-20"}
    texts = [
        "".join(
            c["choices"][0]["delta"]["content"] for c in content if c["choices"][0]["index"] == i
        )
        for i in (0, 1)
    ]
    whole = post(sim, CHAT_URL, CHAT | {"n": 2}).json()
    assert texts == [c["message"]["content"] for c in whole["choices"]]
    assert sim.records[0].usage == sim.records[1].usage and sim.records[0].stream


def test_include_usage_adds_one_usage_chunk_and_nulls_elsewhere() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    stream = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    chunks = [data for _, data in sse(post(sim, CHAT_URL, stream).text)[:-1]]
    with_usage = [c for c in chunks if c.get("usage") is not None]
    assert [c["choices"] for c in with_usage] == [[]] and with_usage[0] is chunks[-1]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert with_usage[0]["usage"] == post(sim, CHAT_URL, CHAT).json()["usage"]


def test_legacy_completions_and_embeddings_raw() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    url = f"/openai/deployments/gpt-35-turbo/completions?api-version={API_VERSION}"
    body = post(sim, url, {"prompt": ["one", "two"], "max_tokens": 3}).json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 6
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
    req = {"prompt": "Say hi", "stream": True, "stream_options": {"include_usage": True}}
    chunks = [d for _, d in sse(post(sim, url, req).text)[:-1]]
    assert chunks[0]["id"] == "" and chunks[0]["prompt_filter_results"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert "".join(c["choices"][0]["text"] for c in chunks[1:-1] if c["choices"])
    emb = f"/openai/deployments/text-embedding-3-large/embeddings?api-version={API_VERSION}"
    r = post(sim, emb, {"input": ["a b", "c"]}).json()
    assert [len(d["embedding"]) for d in r["data"]] == [3072, 3072]
    assert (
        r["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        and r["model"] == "text-embedding-3-large"
    )
    b64 = post(
        sim, emb, {"input": ["a b", "c"], "dimensions": 8, "encoding_format": "base64"}
    ).json()
    assert len(base64.b64decode(b64["data"][0]["embedding"])) == 8 * 4
    assert sim.records[-1].usage == usage5(3, 0) and sim.records[-1].operation == "embeddings"


def test_auth_accepts_api_key_or_bearer_and_rejects_the_rest() -> None:
    sim = Simulator(make_spec(), keys=[KEY, "second-key"])
    assert post(sim, CHAT_URL, CHAT, headers={"api-key": "second-key"}).status_code == 200
    r = post(sim, CHAT_URL, CHAT, headers={"api-key": "", "authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    for headers in ({"api-key": "wrong"}, {"api-key": ""}, {"api-key": "", "authorization": KEY}):
        r = post(sim, CHAT_URL, CHAT, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "401"
        assert r.json()["error"]["message"].startswith(
            "Access denied due to invalid subscription key"
        )
        assert r.headers["apim-request-id"]
    assert len(sim.records) == 2


def test_not_found_and_bad_requests() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    not_found = {"error": {"code": "404", "message": "Resource not found"}}
    for url in (
        "/openai/deployments/gpt-4o/chat/completions",  # no api-version
        "/openai/responses",
        "/openai/deployments/gpt-4o/images/generations?api-version=2024-10-21",
        "/other",
    ):
        r = post(sim, url, CHAT)
        assert (r.status_code, r.json()) == (404, not_found), url
    r = post(sim, CHAT_URL.replace("gpt-4o", "gpt-9"), CHAT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
    r = post(sim, "/openai/v1/chat/completions", CHAT | {"model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
    for body in (b"{not json", b"[1, 2]", json.dumps({"model": "gpt-4o"}).encode()):
        r = post(sim, "/openai/v1/chat/completions", body)
        assert r.status_code == 400 and r.json()["error"]["message"], body
    assert post(sim, CHAT_URL.replace("gpt-4o", "GPT-4O"), CHAT).status_code == 200
    assert [c.deployment for c in sim.records] == ["gpt-4o"]


def test_the_example_spec_serves_its_deployments() -> None:
    sim = Simulator(load_spec(ROOT / "examples" / "gateway.yaml"), keys=[KEY])
    body = post(sim, "/openai/v1/chat/completions", CHAT | {"model": "gpt-4.1"}).json()
    assert body["model"] == "gpt-4.1-2025-04-14"


def test_lifespan_is_acknowledged() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    inbox = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return inbox.pop()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(sim({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# ----------------------------------------------------------------------------- latency, cuts


def test_non_streamed_latency_is_ttft_plus_generation_time() -> None:
    clock = Clock()
    sim = Simulator(make_spec(ttft_ms=250, tokens_per_second=40), keys=[KEY], sleep=clock)
    post(sim, CHAT_URL, CHAT)
    assert clock.slept == [0.25, pytest.approx(12 / 40)]


def test_streamed_latency_sends_the_preamble_then_paces_tokens() -> None:
    log: list[tuple[str, Any]] = []
    clock = Clock(log)
    sim = Simulator(make_spec(ttft_ms=500, tokens_per_second=20), keys=[KEY], sleep=clock)
    asyncio.run(drive(sim, CHAT | {"stream": True}, log))
    kinds = [kind if kind == "sleep" else m["type"] for kind, m in log]
    assert kinds[:4] == ["http.response.start", "http.response.body", "sleep", "http.response.body"]
    assert log[2] == ("sleep", 0.5)  # TTFT after the preamble, before the role chunk
    assert clock.slept[1:] == [pytest.approx(1 / 20)] * 12
    assert sum(clock.slept) == pytest.approx(0.5 + 12 / 20)
    assert sent_frames(log)[-1] == (None, "[DONE]")


def test_client_disconnect_stops_the_stream_and_records_what_was_sent() -> None:
    log: list[tuple[str, Any]] = []
    sim = Simulator(make_spec(tokens_per_second=1000), keys=[KEY], sleep=Clock(log))
    asyncio.run(drive(sim, CHAT | {"stream": True}, log, disconnect_after=5))
    frames = sent_frames(log)
    assert (None, "[DONE]") not in frames and len(frames) < 10
    [call] = sim.records
    text = "".join(d["choices"][0]["delta"].get("content") or "" for _, d in frames[1:])
    prompt = count_prompt("chat", CHAT, "gpt-4o").tokens
    assert (
        call.cut and call.status == 200 and call.usage == usage5(prompt, count_text(text, "gpt-4o"))
    )


def test_stream_cut_raises_in_process_and_records_the_consumed_usage() -> None:
    spec = make_spec(faults=[{"kind": "stream_cut", "cut_after_chunks": 4}])
    sim = Simulator(spec, keys=[KEY])
    assert post(sim, CHAT_URL, CHAT).status_code == 200  # stream_cut ignores non-streamed calls
    with pytest.raises(StreamCutError):
        post(sim, CHAT_URL, CHAT | {"stream": True})
    log: list[tuple[str, Any]] = []
    with pytest.raises(StreamCutError):
        asyncio.run(drive(sim, CHAT | {"stream": True}, log))
    frames = sent_frames(log)
    assert len(frames) == 1 + 1 + 4  # preamble, role, four tokens
    assert log[-1][1]["more_body"] is True  # the response was never finished
    prompt = count_prompt("chat", CHAT, "gpt-4o").tokens
    assert [(c.stream, c.cut, c.status) for c in sim.records] == [
        (False, False, 200),
        (True, True, 200),
        (True, True, 200),
    ]
    assert sim.records[-1].usage == usage5(prompt, 4)


def test_faults_count_per_fault_and_filter_by_deployment() -> None:
    spec = make_spec(
        faults=[
            {"kind": "server_error", "every": 2, "deployments": ["GPT-4O"]},
            {"kind": "content_filter", "every": 3},
        ]
    )
    sim = Simulator(spec, keys=[KEY])
    other = CHAT_URL.replace("gpt-4o", "gpt-35-turbo")
    statuses = [post(sim, url, CHAT).status_code for url in [CHAT_URL] * 4 + [other] * 2]
    # server_error counts gpt-4o calls (2nd, 4th); content_filter counts all (3rd, 6th)
    assert statuses == [200, 500, 400, 500, 200, 400]
    assert [c.status for c in sim.records] == statuses
    assert all(c.usage is None for c in sim.records if c.status != 200)


# ----------------------------------------------------------------------------- the openai SDK


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_chat_non_streamed(live: tuple[Simulator, str], kind: str) -> None:
    sim, url = live
    with client_for(kind, url, _strict_response_validation=True) as client:
        r = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=2)
    assert r.model == "gpt-4o-2024-11-20" and len(r.choices) == 2
    texts = [c.message.content or "" for c in r.choices]
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_prompt("chat", CHAT, "gpt-4o-2024-11-20").tokens
    assert r.usage.completion_tokens == count_completion_text(texts, "gpt-4o") == 24
    assert r.model_extra and r.model_extra["prompt_filter_results"]
    assert sim.records[-1].response_id == r.id and sim.records[-1].usage == usage5(
        r.usage.prompt_tokens, 24
    )


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_chat_streamed_with_and_without_usage(live: tuple[Simulator, str], kind: str) -> None:
    _, url = live
    with client_for(kind, url) as client:
        whole = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        plain = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        counted = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    for chunks in (plain, counted):
        first = chunks[0]
        assert (first.id, first.model, first.created, first.choices) == ("", "", 0, [])
        assert first.model_extra and first.model_extra["prompt_filter_results"]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert [f for f in finishes if f] == ["stop"] and finishes[-1] == "stop"
    assert all(c.usage is None for c in plain)
    assert [c.usage for c in counted if c.usage is not None] == [whole.usage]
    assert counted[-1].choices == []


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_chat_tool_calls(live: tuple[Simulator, str], stream: bool) -> None:
    sim, url = live
    with azure(url) as client:
        kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES, "tools": [WEATHER_TOOL]}
        auto = client.chat.completions.create(**kwargs)
        assert (
            auto.choices[0].message.tool_calls is None and auto.choices[0].finish_reason == "stop"
        )
        named: Any = {"type": "function", "function": {"name": "get_weather"}}
        if stream:
            chunks = list(client.chat.completions.create(**kwargs, tool_choice=named, stream=True))
            calls = [
                c.choices[0].delta.tool_calls[0]
                for c in chunks
                if c.choices and c.choices[0].delta.tool_calls
            ]
            name, args = calls[0].function.name, "".join(c.function.arguments or "" for c in calls)
            assert calls[0].id and calls[0].id.startswith("call_") and len(calls) > 3
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
        else:
            r = client.chat.completions.create(**kwargs, tool_choice="required")
            [call] = r.choices[0].message.tool_calls or []
            name, args = call.function.name, call.function.arguments
            assert (
                r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
            )
    parsed = json.loads(args)
    assert name == "get_weather" and set(parsed) == {"city", "days", "unit"}
    assert isinstance(parsed["days"], int) and parsed["unit"] in ("c", "f")
    if stream:  # a named call: the API writes its name into the prompt, the model the arguments
        completion = count_text(args, "gpt-4o") + FORCED_CALL_FRAME
    else:  # counted as the model writes the call, plus its framing (the real API's count)
        completion = count_text(render_calls([(name, args)]), "gpt-4o") + call_framing(1)
        assert completion == count_text(f" to=functions.{name}{args}", "gpt-4o") + 4
    usage = sim.records[-1].usage
    assert usage is not None and usage["completion_tokens"] == completion
    forced = {"tool_choice": named} if stream else {"tool_choice": "required"}
    request = {"messages": MESSAGES, "tools": [WEATHER_TOOL]} | forced
    assert usage["prompt_tokens"] == count_prompt("chat", request, "gpt-4o").tokens


def test_streamed_tool_calls_reassemble_to_the_reported_usage() -> None:
    """The refitted estimator's count of the reassembled stream (texts as the model writes them,
    plus the calls' framing) is what the simulator reports, as the real API does."""
    sim = Simulator(make_spec(), keys=[KEY])
    for extra in ({}, {"tools": [WEATHER_TOOL], "tool_choice": "required"}):
        body = CHAT | extra | {"stream": True, "stream_options": {"include_usage": True}}
        summary = summarize_stream(post(sim, CHAT_URL, body).text)
        assert summary.done and summary.usage is not None
        counted = count_completion_text(summary.texts, "gpt-4o")
        counted += sum(call_framing(n) for n in summary.tool_calls)
        assert counted == summary.usage.completion_tokens
        assert summary.tool_calls == ([1] if extra else [0])
        whole = post(sim, CHAT_URL, CHAT | extra).json()
        texts, calls = outputs_from_body(whole)[:2]  # (its third item: hidden output)
        framing = sum(call_framing(n) for n in calls)
        assert count_completion_text(texts, "gpt-4o") + framing == counted
        assert whole["usage"]["completion_tokens"] == counted


def _say_hello(client: Any) -> tuple[Any, list[Any]]:
    """A legacy completion of 4 tokens, whole and streamed with its usage chunk."""
    kwargs: dict[str, Any] = {"model": "gpt-35-turbo", "prompt": "Say hello", "max_tokens": 4}
    whole = client.completions.create(**kwargs)
    stream = client.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    return whole, list(stream)


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_legacy_completions(live: tuple[Simulator, str], kind: str) -> None:
    _, url = live
    with client_for(kind, url) as client:
        r, chunks = _say_hello(client)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.prompt_tokens == count_text("Say hello", "gpt-35-turbo")
    assert r.usage.completion_tokens == count_text(r.choices[0].text, "gpt-35-turbo") == 4
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].usage == r.usage


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_embeddings_base64_default_and_float(live: tuple[Simulator, str], kind: str) -> None:
    sim, url = live
    words = ["first input", "second"]
    with client_for(kind, url) as client:  # (strict validation sees base64 before decoding)
        b64 = client.embeddings.create(model="text-embedding-3-small", input=words)
        floats = client.embeddings.create(
            model="text-embedding-3-small", input=words, encoding_format="float", dimensions=256
        )
        small = client.embeddings.create(
            model="text-embedding-3-small", input=words, dimensions=256
        )
    assert [len(d.embedding) for d in b64.data] == [1536, 1536]
    assert floats.data[0].embedding == small.data[0].embedding  # base64 decodes to the floats
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0, rel=1e-4)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert (
        b64.usage.prompt_tokens
        == count_prompt("embeddings", {"input": words}, "text-embedding-3-small").tokens
    )
    assert b64.usage.total_tokens == b64.usage.prompt_tokens
    assert struct.calcsize("<256f") == 4 * len(floats.data[0].embedding)
    assert sim.records[-1].operation == "embeddings" and sim.records[-1].usage is not None


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_responses(live: tuple[Simulator, str], kind: str) -> None:
    sim, url = live
    request: dict[str, Any] = {
        "model": "gpt-4o",
        "input": "Write a haiku.",
        "instructions": "Be brief.",
    }
    with client_for(kind, url) as client:
        with client_for(kind, url, _strict_response_validation=True) as strict:
            r = strict.responses.create(**request)
        events = list(client.responses.create(**request, stream=True))
        capped = client.responses.create(**request, max_output_tokens=3)
    assert r.id.startswith("resp_") and r.status == "completed" and r.model == "gpt-4o-2024-11-20"
    assert r.usage is not None
    assert r.usage.input_tokens == count_prompt("responses", request, "gpt-4o").tokens
    # a Responses text reply bills one token beyond its text, as the real API does
    assert r.usage.output_tokens == count_text(r.output_text, "gpt-4o") + TEXT_REPLY_FRAME == 13
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[4:-4] == ["response.output_text.delta"] * 12
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.output_text == r.output_text and done.usage == r.usage
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta") == r.output_text
    )
    assert capped.status == "incomplete" and capped.usage is not None
    assert capped.usage.output_tokens == 3
    assert capped.incomplete_details and capped.incomplete_details.reason == "max_output_tokens"
    assert sim.records[-1].operation == "responses" and sim.records[-1].usage == usage5(
        capped.usage.input_tokens, 3
    )


def test_responses_stream_raw_has_named_events_and_no_done() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    url = "/openai/responses?api-version=2025-04-01-preview"
    frames = sse(post(sim, url, {"model": "gpt-4o", "input": "hi", "stream": True}).text)
    assert all(name == data["type"] for name, data in frames)
    usage = sim.records[0].usage
    assert (
        usage is not None
        and frames[-1][1]["response"]["usage"]["total_tokens"] == usage["total_tokens"]
    )
    assert frames[-1][0] == "response.completed"


def test_sdk_auth_and_not_found(live: tuple[Simulator, str]) -> None:
    _, url = live
    for kind in ("azure", "v1"):
        with (
            client_for(kind, url, api_key="wrong-key") as client,
            pytest.raises(openai.AuthenticationError) as auth,
        ):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert auth.value.status_code == 401
        with client_for(kind, url) as client, pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-9", messages=MESSAGES)
        assert missing.value.code == "DeploymentNotFound"
    r = httpx.post(
        f"{url}/openai/deployments/gpt-4o/chat/completions", json=CHAT, headers={"api-key": KEY}
    )
    assert r.status_code == 404 and r.json()["error"]["message"] == "Resource not found"
    r = httpx.post(f"{url}/openai/deployments/gpt-4o/chat/completions?api-version=x", json=CHAT)
    assert r.status_code == 401


def test_sdk_sees_every_fault_kind() -> None:
    faults = [
        {"kind": "rate_limit", "every": 2, "retry_after_ms": 1100, "deployments": ["gpt-4o"]},
        {"kind": "server_error", "deployments": ["gpt-35-turbo"]},
        {"kind": "content_filter", "deployments": ["text-embedding-3-small"]},
        {"kind": "stream_cut", "cut_after_chunks": 2, "deployments": ["gpt-4o"]},
    ]
    sim = Simulator(make_spec(faults=faults), keys=[KEY])
    with serve(sim) as url, azure(url) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        headers = limited.value.response.headers
        assert (headers["retry-after-ms"], headers["retry-after"]) == ("1100", "2")
        assert (
            headers["x-ratelimit-remaining-requests"]
            == headers["x-ratelimit-remaining-tokens"]
            == "0"
        )
        assert limited.value.code == "429" and "retry after 2 seconds" in limited.value.message
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-35-turbo", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as filtered:
            client.embeddings.create(model="text-embedding-3-small", input="x")
        body = filtered.value.body
        assert isinstance(body, dict) and filtered.value.code == "content_filter"
        assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
        assert body["innererror"]["content_filter_result"]["violence"]["filtered"] is True
        received: list[str] = []
        with pytest.raises(openai.APIConnectionError):  # 3rd gpt-4o call: not rate limited
            for chunk in client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            ):
                received += [c.delta.content or "" for c in chunk.choices]
        with azure(url, max_retries=1) as patient:  # 4th call is limited, the SDK's retry passes
            started = time.monotonic()
            ok = patient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert ok.choices[0].finish_reason == "stop" and time.monotonic() - started >= 1.0
    prompt = count_prompt("chat", CHAT, "gpt-4o").tokens
    assert [(c.operation, c.status, c.cut) for c in sim.records] == [
        ("chat", 200, False),
        ("chat", 429, False),
        ("chat", 500, False),
        ("embeddings", 400, False),
        ("chat", 200, True),
        ("chat", 429, False),
        ("chat", 200, False),
    ]
    assert (
        sim.records[4].usage
        == usage5(prompt, count_text("".join(received), "gpt-4o"))
        == usage5(prompt, 2)
    )
    assert [c.usage for c in sim.records if c.status != 200] == [None] * 4


def test_a_cut_responses_stream_records_the_deltas_sent() -> None:
    spec = make_spec(faults=[{"kind": "stream_cut", "cut_after_chunks": 5}])
    sim = Simulator(spec, keys=[KEY])
    request = {"model": "gpt-4o", "input": "hi", "stream": True}
    with pytest.raises(StreamCutError):
        post(sim, "/openai/v1/responses", request)
    prompt = count_prompt("responses", request, "gpt-4o").tokens
    [call] = sim.records
    assert (call.operation, call.cut, call.usage) == (
        "responses",
        True,
        usage5(prompt, 5 + TEXT_REPLY_FRAME),
    )


# ----------------------------------------------------------------------------- tool calls as written


def test_a_cut_tool_call_stream_records_the_call_as_written_so_far() -> None:
    spec = make_spec(faults=[{"kind": "stream_cut", "cut_after_chunks": 3}])
    sim = Simulator(spec, keys=[KEY])
    log: list[tuple[str, Any]] = []
    body = CHAT | {"stream": True, "tools": [WEATHER_TOOL], "tool_choice": "required"}
    with pytest.raises(StreamCutError):
        asyncio.run(drive(sim, body, log))
    calls = [
        d["choices"][0]["delta"]["tool_calls"][0]["function"]
        for _, d in sent_frames(log)
        if d["choices"] and d["choices"][0]["delta"].get("tool_calls")
    ]
    name, args = calls[0]["name"], "".join(c["arguments"] for c in calls)
    assert name == "get_weather" and len(calls) == 4  # the name chunk, three argument tokens
    expected = count_text(render_calls([(name, args)]), "gpt-4o") + call_framing(1)
    [call] = sim.records
    assert call.cut and call.usage is not None and call.usage["completion_tokens"] == expected
    summary = summarize_stream(sent_body(log))  # the estimator's view of the cut stream
    estimate = count_completion_text(summary.texts, "gpt-4o") + call_framing(summary.tool_calls[0])
    assert estimate == expected


# ----------------------------------------------------------------------------- reasoning models

REASONING_URL = CHAT_URL.replace("gpt-4o", "o3-mini")


def test_reasoning_models_bill_hidden_tokens_in_every_usage_shape() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    body = post(sim, REASONING_URL, CHAT).json()
    usage = body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning % 64 == 0 and 64 <= reasoning <= 512
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert usage["completion_tokens"] == count_text(text, "o3-mini") + reasoning == 12 + reasoning
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    served = usage5(usage["prompt_tokens"], 12 + reasoning) | {"reasoning_tokens": reasoning}
    assert sim.records[-1].usage == served
    assert post(sim, REASONING_URL, CHAT).json()["usage"] == usage  # seeded from the request
    stream = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    streamed = post(sim, REASONING_URL, stream).text
    assert [d for _, d in sse(streamed)[:-1]][-1]["usage"] == usage
    assert sim.records[-1].usage == served and sim.records[-1].stream
    summary = summarize_stream(streamed)  # visible output is all a stream shows
    assert count_completion_text(summary.texts, "o3-mini") + reasoning == usage["completion_tokens"]
    two = post(sim, REASONING_URL, CHAT | {"n": 2}).json()["usage"]
    hidden = two["completion_tokens_details"]["reasoning_tokens"]  # both choices reason
    assert two["completion_tokens"] == 24 + hidden and hidden % 64 == 0 and 128 <= hidden <= 1024
    drawn = {
        post(sim, REASONING_URL, {"messages": [{"role": "user", "content": f"q{i}"}]}).json()[
            "usage"
        ]["completion_tokens_details"]["reasoning_tokens"]
        for i in range(12)
    }
    assert len(drawn) > 1 and all(r % 64 == 0 and 64 <= r <= 512 for r in drawn)
    plain = post(sim, CHAT_URL, CHAT).json()["usage"]  # not a reasoning model
    assert plain["completion_tokens_details"]["reasoning_tokens"] == 0
    assert plain["completion_tokens"] == 12


def test_reasoning_counts_toward_the_request_limit() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    for limit in (30, 100, 200, 600):
        body = post(sim, REASONING_URL, CHAT | {"max_completion_tokens": limit}).json()
        usage, choice = body["usage"], body["choices"][0]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        visible = count_text(choice["message"]["content"], "o3-mini")
        assert usage["completion_tokens"] == visible + reasoning <= limit
        assert reasoning == (30 if limit == 30 else reasoning) and reasoning <= 512
        assert visible == min(12, limit - reasoning)
        assert choice["finish_reason"] == ("length" if limit - reasoning < 12 else "stop")
    assert sim.records[0].usage is not None and sim.records[0].usage["completion_tokens"] == 30


def test_reasoning_time_comes_before_the_first_token_and_a_cut_bills_it() -> None:
    log: list[tuple[str, Any]] = []
    clock = Clock(log)
    sim = Simulator(make_spec(ttft_ms=100, tokens_per_second=100), keys=[KEY], sleep=clock)
    asyncio.run(drive(sim, CHAT | {"stream": True}, log, deployment="o3-mini"))
    usage = sim.records[0].usage
    assert usage is not None and usage["reasoning_tokens"] >= 64
    assert clock.slept[0] == pytest.approx(0.1 + usage["reasoning_tokens"] / 100)
    assert clock.slept[1:] == [pytest.approx(1 / 100)] * 12
    cut = Simulator(make_spec(faults=[{"kind": "stream_cut", "cut_after_chunks": 4}]), keys=[KEY])
    with pytest.raises(StreamCutError):
        post(cut, REASONING_URL, CHAT | {"stream": True})
    assert cut.records[0].cut and cut.records[0].usage == usage5(
        usage["prompt_tokens"], 4 + usage["reasoning_tokens"]
    ) | {"reasoning_tokens": usage["reasoning_tokens"]}


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_sdk_responses_report_reasoning_tokens(live: tuple[Simulator, str], kind: str) -> None:
    sim, url = live
    request: dict[str, Any] = {"model": "gpt-5", "input": "Plan a trip."}
    with client_for(kind, url) as client:
        with client_for(kind, url, _strict_response_validation=True) as strict:
            r = strict.responses.create(**request)
        events = list(client.responses.create(**request, stream=True))
        capped = client.responses.create(**request, max_output_tokens=16)
    assert r.usage is not None and r.status == "completed"
    reasoning = r.usage.output_tokens_details.reasoning_tokens
    assert reasoning % 64 == 0 and 64 <= reasoning <= 512
    assert (
        r.usage.output_tokens == count_text(r.output_text, "gpt-5") + TEXT_REPLY_FRAME + reasoning
    )
    assert events[-1].type == "response.completed" and events[-1].response.usage == r.usage
    assert capped.status == "incomplete" and capped.usage is not None and capped.output_text == ""
    assert capped.usage.output_tokens == capped.usage.output_tokens_details.reasoning_tokens == 16
    last = sim.records[-1].usage
    assert last is not None and (last["reasoning_tokens"], last["completion_tokens"]) == (16, 16)


# ----------------------------------------------------------------------------- prompt caching


def test_repeated_long_prompts_report_their_cached_prefix() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    first: dict[str, Any] = {"messages": long_messages("a")}
    prompt = count_prompt("chat", first, "gpt-4o").tokens
    assert prompt > 1200 and prompt - 128 < cacheable(prompt) <= prompt

    def cached(url: str, body: dict[str, Any]) -> int:
        return int(post(sim, url, body).json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    assert cached(CHAT_URL, first) == 0  # nothing seen yet
    assert cached(CHAT_URL, first) == cacheable(prompt)
    turn = [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "More?"}]
    longer = {"messages": [*first["messages"], *turn]}  # the conversation goes on
    assert count_prompt("chat", longer, "gpt-4o").tokens > prompt
    assert cached(CHAT_URL, longer) == cacheable(prompt)  # its earlier messages are cached
    assert cached(CHAT_URL, longer) == cacheable(count_prompt("chat", longer, "gpt-4o").tokens)
    assert cached(CHAT_URL.replace("gpt-4o", "gpt-35-turbo"), first) == 0  # per deployment
    assert cached(CHAT_URL, first | {"tools": [WEATHER_TOOL]}) == 0  # tools come first
    assert cached(CHAT_URL, {"messages": long_messages("b")}) == 0  # another system prompt
    assert cached(CHAT_URL, CHAT) == cached(CHAT_URL, CHAT) == 0  # short prompts never are
    records = [c.usage["cached_tokens"] for c in sim.records if c.usage]
    assert records[:4] == [0, cacheable(prompt), cacheable(prompt), records[3]] and records[3] > 0
    assert records[4:] == [0, 0, 0, 0, 0]


def test_cached_tokens_appear_in_every_usage_shape() -> None:
    sim = Simulator(make_spec(), keys=[KEY])
    chat: dict[str, Any] = {"messages": long_messages("c")}
    post(sim, CHAT_URL, chat)
    stream = chat | {"stream": True, "stream_options": {"include_usage": True}}
    chunk = [d for _, d in sse(post(sim, CHAT_URL, stream).text)[:-1]][-1]
    cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == cacheable(chunk["usage"]["prompt_tokens"]) >= 1024
    request = {"model": "gpt-4o", "input": long_messages("d")}
    assert post(sim, "/openai/v1/responses", request).json()["usage"]["input_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": 0,
    }
    usage = post(sim, "/openai/v1/responses", request).json()["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == cacheable(usage["input_tokens"])
    frames = sse(post(sim, "/openai/v1/responses", request | {"stream": True}).text)
    assert frames[-1][0] == "response.completed" and frames[-1][1]["response"]["usage"] == usage
    url = f"/openai/deployments/gpt-35-turbo/completions?api-version={API_VERSION}"
    legacy = {"prompt": long_messages("e")[0]["content"], "max_tokens": 2}
    post(sim, url, legacy)
    again = post(sim, url, legacy).json()["usage"]
    assert again["prompt_tokens_details"]["cached_tokens"] == cacheable(again["prompt_tokens"])
    served = [c.usage["cached_tokens"] for c in sim.records if c.usage]
    hit = usage["input_tokens_details"]["cached_tokens"]
    legacy_hit = again["prompt_tokens_details"]["cached_tokens"]
    assert served == [0, cached, 0, hit, hit, 0, legacy_hit]


def test_sdk_reports_cached_tokens(live: tuple[Simulator, str]) -> None:
    sim, url = live
    messages: Any = long_messages("sdk")
    with azure(url, _strict_response_validation=True) as client:
        client.chat.completions.create(model="gpt-4o", messages=messages)
        r = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == cacheable(r.usage.prompt_tokens)
    last = sim.records[-1].usage
    assert last is not None and last["cached_tokens"] == cacheable(r.usage.prompt_tokens)


def plans(count: int) -> list[Any]:
    return [
        make_plan(
            "chat",
            "gpt-4o",
            "gpt-4o",
            {"messages": long_messages(f"p{i}")},
            max_reply_tokens=1,
            created=0,
        )
        for i in range(count)
    ]


def test_prompt_cache_is_a_bounded_lru() -> None:
    first, second, third = plans(3)  # two prefix keys each: system, system + user
    cache = PromptCache(size=4)
    assert [cache.cached_tokens(p) for p in (first, second)] == [0, 0] and len(cache) == 4
    assert cache.cached_tokens(first) == cacheable(first.prompt_tokens)  # now the most recent
    assert cache.cached_tokens(third) == 0 and len(cache) == 4  # evicts the second's keys
    assert cache.cached_tokens(second) == 0
    assert cache.cached_tokens(third) == cacheable(third.prompt_tokens)


def test_prompt_cache_is_thread_safe() -> None:
    """Whatever order the threads run in: three prompts (six prefix keys) fit the cache, so
    only each one's first lookup misses; six (twelve keys) keep it within its size."""
    shared = PromptCache(size=8)
    few = plans(3) * 40
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(shared.cached_tokens, few))
    assert results.count(0) == 3
    assert all(r == 0 or r == cacheable(p.prompt_tokens) for r, p in zip(results, few, strict=True))
    with ThreadPoolExecutor(8) as pool:  # evictions under contention
        list(pool.map(shared.cached_tokens, plans(6) * 20))
    assert len(shared) <= 8


# ----------------------------------------------------------------------------- stream shapes


def test_obfuscation_pads_every_chunk_when_asked() -> None:
    plain_sim = Simulator(make_spec(), keys=[KEY])
    shaped = Simulator(make_spec(), keys=[KEY], shape=StreamShape(obfuscation=True))
    stream = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    plain, padded = (post(s, CHAT_URL, stream).text for s in (plain_sim, shaped))
    frames = sse(padded)
    assert frames[-1] == (None, "[DONE]") and len(frames) == len(sse(plain))
    pads = [d["obfuscation"] for _, d in frames[:-1]]
    assert all(isinstance(p, str) and p.isalnum() and 1 <= len(p) <= 16 for p in pads)
    assert len(set(pads)) > 1 and all("obfuscation" not in d for _, d in sse(plain)[:-1])
    assert summarize_stream(padded).texts == summarize_stream(plain).texts
    assert summarize_stream(padded).usage == summarize_stream(plain).usage
    off = {"stream": True, "stream_options": {"include_obfuscation": False}}
    assert all("obfuscation" not in d for _, d in sse(post(shaped, CHAT_URL, CHAT | off).text)[:-1])
    on = {"stream": True, "stream_options": {"include_obfuscation": True}}
    assert all("obfuscation" in d for _, d in sse(post(plain_sim, CHAT_URL, CHAT | on).text)[:-1])
    request = {"model": "gpt-4o", "input": "hi", "stream": True}
    events = sse(post(shaped, "/openai/v1/responses", request).text)
    deltas = [d for name, d in events if name == "response.output_text.delta"]
    assert len(deltas) == 12 and all(d["obfuscation"].isalnum() for d in deltas)
    assert all("obfuscation" not in d for name, d in events if name != "response.output_text.delta")


def test_async_filter_shape_sends_annotation_chunks_with_offsets() -> None:
    sim = Simulator(make_spec(), keys=[KEY], shape=StreamShape(filter_offsets=True))
    body = CHAT | {"stream": True, "n": 2, "stream_options": {"include_usage": True}}
    text = post(sim, CHAT_URL, body).text
    chunks = [d for _, d in sse(text)[:-1]]
    content = [
        c for c in chunks if c["choices"] and c["choices"][0].get("delta", {}).get("content")
    ]
    assert len(content) == 24 and all(
        c["choices"][0]["content_filter_results"] == {} for c in content
    )
    notes = [c for c in chunks if c["choices"] and "content_filter_offsets" in c["choices"][0]]
    whole = post(sim, CHAT_URL, CHAT | {"n": 2}).json()
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert [
        (n["choices"][0]["index"], n["choices"][0]["content_filter_offsets"]) for n in notes
    ] == [(i, {"check_offset": 0, "start_offset": 0, "end_offset": len(texts[i])}) for i in (0, 1)]
    for note in notes:
        assert (note["id"], note["model"], note["created"]) == ("", "", 0)
        assert "delta" not in note["choices"][0] and note["choices"][0]["finish_reason"] is None
        assert note["choices"][0]["content_filter_results"]["violence"]["filtered"] is False
    last_finish = max(
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    )
    assert last_finish < chunks.index(notes[0]) and chunks[-1]["choices"] == []
    summary = summarize_stream(text)  # the estimator skips annotation chunks
    assert summary.texts == texts and summary.usage is not None
    assert summary.usage.completion_tokens == whole["usage"]["completion_tokens"]


def test_completions_streams_can_skip_the_preamble() -> None:
    url = f"/openai/deployments/gpt-35-turbo/completions?api-version={API_VERSION}"
    req = {"prompt": "Say hi", "max_tokens": 3, "stream": True}
    sim = Simulator(make_spec(), keys=[KEY], shape=StreamShape(completions_preamble=False))
    chunks = [d for _, d in sse(post(sim, url, req).text)[:-1]]
    assert chunks[0]["id"].startswith("cmpl-") and chunks[0]["choices"][0]["text"]
    assert chunks[0]["prompt_filter_results"] == PROMPT_FILTER_RESULTS
    assert sum("prompt_filter_results" in c for c in chunks) == 1 and all(
        c["choices"] for c in chunks
    )
    default = [d for _, d in sse(post(Simulator(make_spec(), keys=[KEY]), url, req).text)[:-1]]
    assert (
        default[0]["choices"] == [] and default[0]["id"] == "" and len(default) == len(chunks) + 1
    )
    assert "".join(c["choices"][0]["text"] for c in default[1:]) == "".join(
        c["choices"][0]["text"] for c in chunks
    )
    chat = sse(post(sim, CHAT_URL, CHAT | {"stream": True}).text)  # chat keeps its preamble
    assert chat[0][1]["choices"] == [] and chat[0][1]["prompt_filter_results"]


def test_sdk_reads_the_optional_stream_shapes() -> None:
    shape = StreamShape(obfuscation=True, completions_preamble=False)
    sim = Simulator(make_spec(), keys=[KEY], shape=shape)
    with serve(sim) as url, azure(url) as client:
        whole, chunks = _say_hello(client)
        chat = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage == whole.usage and chunks[0].model_extra
    assert chunks[0].model_extra["obfuscation"] and chunks[0].model_extra["prompt_filter_results"]
    assert all(c.obfuscation and c.obfuscation.isalnum() for c in chat)  # a field of the SDK
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices)


@pytest.mark.parametrize("offsets", [False, True])
def test_azure_2023_chunks_keep_their_key_order_and_reassemble(offsets: bool) -> None:
    """Microsoft's content-streaming page shows 2023 chunks: ``index, finish_reason, delta``
    before the filter results, ``usage: null`` last, ``prompt_annotations`` first."""
    shape = StreamShape(azure_2023=True, filter_offsets=offsets)
    sim = Simulator(make_spec(), keys=[KEY], shape=shape)
    raw = post(sim, CHAT_URL, CHAT | {"stream": True, "stream_options": {"include_usage": True}})
    chunks = [d for _, d in sse(raw.text)[:-1]]
    head = ["id", "object", "created", "model"]
    assert list(chunks[0]) == [*head, "prompt_annotations", "choices", "usage"]
    role, first = chunks[1], chunks[2]
    assert list(role) == [*head, "choices", "usage"]
    assert role["choices"][0] == {"index": 0, "finish_reason": None, "delta": {"role": "assistant"}}
    wanted = ["index", "finish_reason", "delta"] + ([] if offsets else ["content_filter_results"])
    assert list(first["choices"][0]) == wanted
    annotations = [
        c for c in chunks if c["choices"] and "content_filter_offsets" in c["choices"][0]
    ]
    assert len(annotations) == (1 if offsets else 0)
    summary = summarize_stream(raw.text)
    assert summary.usage is not None and summary.done
    assert count_completion_text(summary.texts, "gpt-4o") == summary.usage.completion_tokens
    with serve(sim) as url, azure(url) as client:  # the SDK reads them too
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            if c.choices and c.choices[0].delta  # an annotation chunk has no delta
        )
    assert text and count_text(text, "gpt-4o") == summary.usage.completion_tokens
