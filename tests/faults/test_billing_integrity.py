"""No free calls and no way around the gateway: hostile callers through the real local stack.

Every case goes over real loopback sockets to the running local stack (gateway, simulator,
event log, consumer, reconciler) — paths are sent as raw bytes, because an HTTP client would
normalise them before they left — in pass-through and buffered capture, and compares what was
*served* (the simulator's records) with what was *billed* (the stored rows):

- a path that is not canonical (dot segments, percent-encoding, ``//``, a trailing ``/``) or
  outside the metered ``/openai/…`` operations is refused and never forwarded;
- an operation that cannot be metered in tokens is refused unless the spec allows it, and then
  it is an unpriced call, never a free one;
- a request of many small parts, or one huge part, is billed at least what it served;
- a body nested too deep is refused, never served without an event;
- buffered capture with an api-version that takes no ``include_usage`` bills the reply;
- the per-BU token limits refuse as APIM would (429 / 403 with its headers);
- slow sockets are timed out; a full event log stops serving instead of serving unlogged.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from secrets_registry import register_secret
from sqlalchemy import select
from waiting import wait_until

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table
from aoai_helpers.eventlog.eventhub import LocalEventLog
from aoai_helpers.local.stack import LocalStack
from aoai_helpers.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
CHAT = "/openai/deployments/gpt-4o/chat/completions"
VERSION = "api-version=2024-10-21"
MODES = ["passthrough", "buffered"]


def _spec(**local: Any) -> Spec:
    data = SPEC.model_dump()
    data["local"].update(local)
    return parse_spec(data)


def _with(spec: Spec, **capture: Any) -> Spec:
    data = spec.model_dump()
    data["capture"].update(capture)
    return parse_spec(data)


def raw_post(
    url: str,
    target: str,
    body: bytes,
    key: str | None,
    *,
    method: str = "POST",
    timeout: float = 120.0,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with ``target`` sent byte for byte; (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if key is not None:
        lines.append(f"api-key: {key}")
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ConnectionResetError(f"no response to {method} {target}")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    return status, payload


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def _rows(db: str) -> list[dict[str, Any]]:
    engine = engine_from_url(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(token_table).order_by(token_table.c.Id)).mappings()
            return [dict(r) for r in found]
    finally:
        engine.dispose()


@contextmanager
def stack(tmp_path: Path, spec: Spec = SPEC, capture: str = "passthrough") -> Iterator[LocalStack]:
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    with LocalStack(spec, db_url=db, capture=capture, state_dir=tmp_path / "state") as running:  # type: ignore[arg-type]
        register_secret(*running.info.keys.values(), running.info.backend_key)
        yield running


def _key(s: LocalStack, sid: str = "bu-finance") -> str:
    return s.info.keys[sid]


def _body(**fields: Any) -> bytes:
    return orjson.dumps({"messages": [{"role": "user", "content": "hello"}], **fields})


def served_vs_billed(s: LocalStack, db: str) -> list[tuple[dict[str, int], dict[str, Any]]]:
    """Each served call (the simulator's record, in order) with its row, after the stack has
    stored and reconciled everything."""
    sim = s.simulator
    assert sim is not None
    assert s.wait_reconciled(timeout=120) is not None
    rows = _rows(db)
    served = [r.usage for r in sim.records if r.usage is not None]
    assert len(served) == len([r for r in rows if 200 <= r["StatusCode"] <= 299])
    ok = [r for r in rows if 200 <= r["StatusCode"] <= 299]
    return list(zip(served, ok, strict=True))


# ----------------------------------------------------------------------------- paths


HOSTILE_PATHS = [
    f"{CHAT}/.",
    f"{CHAT}/x/..",
    "/openai/v1/chat/completions%23x",
    "/openai/deployments/gpt-4o-mini/../gpt-4.1/chat/completions",
    "/openai/../internal/keys",
    "/openai/deployments/../../admin",
    "/openai/deployments/gpt-4o/chat/%2e%2e/completions",
    "/openai/deployments/gpt-4o%2Fchat/completions",
    "/openai//deployments/gpt-4o/chat/completions",
    f"{CHAT}/",
    "/openai/deployments/.gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o/chat\\completions",
    "/openai/deployments/gpt-4o/chat/completions%00",
    "/internal/keys",
    "/openai/deployments/gpt-4o/extensions/chat/completions",
]


@pytest.mark.parametrize("capture", MODES)
def test_paths_that_are_not_canonical_operations_are_never_forwarded(
    tmp_path: Path, capture: str
) -> None:
    with stack(tmp_path, capture=capture) as s:
        statuses = {
            path: raw_post(s.info.gateway_url, f"{path}?{VERSION}", _body(stream=True), _key(s))[0]
            for path in HOSTILE_PATHS
        }
        assert s.wait_ingested()
        assert s.simulator is not None and s.simulator.records == []  # nothing reached AOAI
    assert all(code in (400, 404) for code in statuses.values()), statuses
    assert _rows(f"sqlite:///{tmp_path / 'usage.db'}") == []  # nothing served, nothing logged
    events = LocalEventLog(tmp_path / "state" / "events")
    assert events.last_sequence_number() == -1


@pytest.mark.parametrize("capture", MODES)
def test_the_deployment_billed_is_the_deployment_served(tmp_path: Path, capture: str) -> None:
    with stack(tmp_path, capture=capture) as s:
        for dep in ("gpt-4o-mini", "gpt-4.1"):
            status, _ = raw_post(
                s.info.gateway_url,
                f"/openai/deployments/{dep}/chat/completions?{VERSION}",
                _body(),
                _key(s),
            )
            assert status == 200
        unknown, _ = raw_post(
            s.info.gateway_url,
            f"/openai/deployments/nope/chat/completions?{VERSION}",
            _body(),
            _key(s),
        )
        sim = s.simulator
        assert sim is not None and unknown == 404
        pairs = served_vs_billed(s, f"sqlite:///{tmp_path / 'usage.db'}")
        served_deployments = [r.deployment for r in sim.records]
    assert (
        [row["DeploymentName"] for _, row in pairs]
        == served_deployments
        == ["gpt-4o-mini", "gpt-4.1"]
    )
    assert [row["ModelName"] for _, row in pairs] == ["gpt-4o-mini", "gpt-4.1"]


# ----------------------------------------------------------------------------- unmetered operations


UNMETERED = [
    ("/openai/deployments/gpt-4o/images/generations", "images"),
    ("/openai/deployments/gpt-4o/audio/transcriptions", "audio"),
    ("/openai/v1/audio/speech", "audio"),
    ("/openai/files", "files"),
    ("/openai/v1/batches", "batches"),
    ("/openai/v1/realtime", "realtime"),
]


@pytest.mark.parametrize("capture", MODES)
def test_operations_that_cannot_be_metered_are_refused(tmp_path: Path, capture: str) -> None:
    with stack(tmp_path, capture=capture) as s:
        for path, name in UNMETERED:
            status, body = raw_post(s.info.gateway_url, f"{path}?{VERSION}", b"{}", _key(s))
            assert status == 403 and name.encode() in body, (path, body)
        assert s.simulator is not None and s.simulator.records == []
    assert _rows(f"sqlite:///{tmp_path / 'usage.db'}") == []


def test_an_allowed_unmetered_operation_is_an_unpriced_call_never_a_free_one(
    engine: Any, ingest_events: Any, token_rows: Any
) -> None:
    """Allowed by the spec, an operation without token usage is forwarded and logged as
    ``other``; ingest bills it as an unpriced call of its BU (Cost NULL, counted), not as 0."""
    import asyncio

    import httpx

    from aoai_helpers.local.gateway import Gateway

    spec = _with(SPEC, allow_unmetered=["images"])
    events: list[bytes] = []

    async def backend(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b'{"created": 1, "data": [{"url": "https://example.invalid/a.png"}]}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    gateway = Gateway(
        spec,
        keys={"bu-finance": "k" * 24},
        backend_secret="b" * 24,
        sink=events.append,
        backend_urls={b.name: "http://aoai" for b in spec.backends},
        transport=httpx.ASGITransport(app=backend),
    )

    async def go() -> int:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            r = await client.post(
                f"/openai/deployments/gpt-4o/images/generations?{VERSION}",
                json={"prompt": "a cat"},
                headers={"api-key": "k" * 24},
            )
            return r.status_code

    assert asyncio.run(go()) == 200
    (event,) = [orjson.loads(e) for e in events]
    assert event["Operation"] == "other" and event["OperationId"] == "images"
    ingest_events(engine, event)
    (row,) = token_rows(engine)
    assert row["UsageSource"] == "unmetered" and row["Cost"] is None  # unpriced, never 0


# ----------------------------------------------------------------------------- big requests


def _stream_body(messages: list[dict[str, str]]) -> bytes:
    return orjson.dumps({"messages": messages, "stream": True, "max_tokens": 16})


@pytest.mark.parametrize("capture", MODES)
def test_many_small_parts_and_one_huge_part_are_billed_what_they_served(
    tmp_path: Path, capture: str
) -> None:
    db = f"sqlite:///{tmp_path / 'usage.db'}"
    with stack(tmp_path, capture=capture) as s:
        small = [{"role": "user", "content": "hi"}] * 20_000
        huge = [{"role": "user", "content": "word " * 108_000}]  # one 540 KB message
        for messages in (small, huge):
            status, _ = raw_post(
                s.info.gateway_url, f"{CHAT}?{VERSION}", _stream_body(messages), _key(s)
            )
            assert status == 200
        pairs = served_vs_billed(s, db)
    (small_served, small_row), (huge_served, huge_row) = pairs
    for served, row in pairs:
        assert row["PromptTokens"] >= served["prompt_tokens"]  # billed at least what was served
        assert row["CompletionTokens"] >= served["completion_tokens"]
    if capture == "passthrough":
        # at ingest (before the language-model log): the small parts are proven, all of them
        assert small_row["PriorUsageSource"] == "prompt_only"
        assert small_row["PriorPromptTokens"] >= small_served["prompt_tokens"] == 100_003
        # the huge part could only be proven in part; reconciliation gave the exact figure
        assert 0 < huge_row["PriorPromptTokens"] < huge_served["prompt_tokens"]
        assert huge_row["UsageSource"] == "reconciled"


def _nested(depth: int) -> str:
    """A JSON schema ``depth`` objects deep, as text (serialisers stop short of 1,024 levels)."""
    return '{"type": "object", "properties": {"x": ' * depth + '{"type": "string"}' + "}}" * depth


@pytest.mark.parametrize("capture", MODES)
def test_a_body_nested_too_deep_is_refused_and_a_deep_one_is_logged(
    tmp_path: Path, capture: str
) -> None:
    def call(s: LocalStack, depth: int) -> int:
        body = (
            '{"messages": [{"role": "user", "content": "hi"}], "stream": true, "tools": [{"type": '
            '"function", "function": {"name": "f", "parameters": ' + _nested(depth) + "}}]}"
        ).encode()

        return raw_post(s.info.gateway_url, f"{CHAT}?{VERSION}", body, _key(s))[0]

    with stack(tmp_path, capture=capture) as s:
        refused = [call(s, depth) for depth in (256, 1024)]
        served = call(s, 25)  # 25 levels of schema: within the 64 allowed
        pairs = served_vs_billed(s, f"sqlite:///{tmp_path / 'usage.db'}")
    assert refused == [400, 400] and served == 200
    ((usage, row),) = pairs  # the one served call has its row
    assert (
        row["PromptTokens"] >= usage["prompt_tokens"]
        and row["CompletionTokens"] >= usage["completion_tokens"]
    )


def test_buffered_capture_with_an_old_api_version_bills_the_reply(tmp_path: Path) -> None:
    """2024-06-01 takes no ``stream_options``: no usage chunk can be asked for, so the event keeps
    the reply and ingest counts it."""
    with stack(tmp_path, capture="buffered") as s:
        status, _ = raw_post(
            s.info.gateway_url, f"{CHAT}?api-version=2024-06-01", _body(stream=True), _key(s)
        )
        assert status == 200
        ((served, row),) = served_vs_billed(s, f"sqlite:///{tmp_path / 'usage.db'}")
    assert row["UsageSource"] in ("estimated", "reconciled")
    assert row["CompletionTokens"] >= served["completion_tokens"] > 0
    assert row["PromptTokens"] >= served["prompt_tokens"]


# ----------------------------------------------------------------------------- token limits


def test_the_per_bu_token_limits_refuse_as_apim_would(tmp_path: Path) -> None:
    data = SPEC.model_dump()
    for sub in data["subscriptions"]:
        if sub["id"] == "bu-finance":
            sub["token_limit"] = {"tokens_per_minute": 30}
        if sub["id"] == "bu-marketing":
            sub["token_limit"] = {"token_quota": 30, "token_quota_period": "Monthly"}
    spec = parse_spec(data)
    with stack(tmp_path, spec) as s:
        url = f"{CHAT}?{VERSION}"
        first, _ = raw_post(s.info.gateway_url, url, _body(), _key(s, "bu-finance"))
        second, body = raw_post(s.info.gateway_url, url, _body(), _key(s, "bu-finance"))
        quota_first, _ = raw_post(s.info.gateway_url, url, _body(), _key(s, "bu-marketing"))
        quota_second, quota_body = raw_post(
            s.info.gateway_url, url, _body(), _key(s, "bu-marketing")
        )
        other, _ = raw_post(s.info.gateway_url, url, _body(), _key(s, "bu-rnd"))
        sim = s.simulator
        assert sim is not None
        served = len(sim.records)
    # a call that starts under the limit goes through; the next is refused until it frees up
    assert (first, second) == (200, 429) and json.loads(body)["statusCode"] == 429
    assert (quota_first, quota_second) == (200, 403) and "quota" in quota_body.decode().lower()
    assert other == 200 and served == 3  # refused calls never reached AOAI


# ----------------------------------------------------------------------------- sockets


def test_slow_and_idle_sockets_are_timed_out(tmp_path: Path) -> None:
    spec = _spec(header_timeout_seconds=1.0, body_timeout_seconds=1.0)
    with stack(tmp_path, spec) as s:
        host, port = s.info.gateway_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as idle:
            idle.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # never ends
            assert idle.recv(1024) == b""  # closed by the gateway, not by this timeout
        with socket.create_connection((host, int(port)), timeout=60) as slow:
            head = (
                f"POST {CHAT}?{VERSION} HTTP/1.1\r\nHost: x\r\napi-key: {_key(s)}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            slow.sendall(head.encode() + b'{"messages": ')  # then nothing more
            reply = slow.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
        assert s.simulator is not None and s.simulator.records == []


# ----------------------------------------------------------------------------- a failing event log


class _FailingProducer:
    """The event log's producer, failing every append while ``failing`` is set (a full disk)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failing = False

    def send(self, bodies: Any) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        self.real.send(bodies)

    def close(self) -> None:
        self.real.close()


def test_a_full_event_log_stops_serving_instead_of_serving_unlogged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producers: list[_FailingProducer] = []
    real_producer = LocalEventLog.producer

    def failing(self: LocalEventLog, *args: Any, **kwargs: Any) -> _FailingProducer:
        producers.append(_FailingProducer(real_producer(self, *args, **kwargs)))
        return producers[-1]

    monkeypatch.setattr(LocalEventLog, "producer", failing)
    with stack(tmp_path) as s:
        url = f"{CHAT}?{VERSION}"
        ok, _ = raw_post(s.info.gateway_url, url, _body(), _key(s))
        producers[0].failing = True
        in_flight, _ = raw_post(s.info.gateway_url, url, _body(), _key(s))  # its event fails
        refused, _ = raw_post(s.info.gateway_url, url, _body(), _key(s))  # not even forwarded
        sim = s.simulator
        assert sim is not None
        forwarded = len(sim.records)
        producers[0].failing = False  # space again: the gateway tries again after a second
        wait_until(
            lambda: s.gateway is not None and s.gateway._healthy(), 60, "the log to be usable"
        )
        again, _ = raw_post(s.info.gateway_url, url, _body(), _key(s))
        assert s.wait_ingested()
    assert (ok, in_flight, refused, again) == (200, 503, 503, 200)
    assert forwarded == 2  # the in-flight call reached AOAI, but its client got no answer
    rows = _rows(f"sqlite:///{tmp_path / 'usage.db'}")
    assert len(rows) == 2  # every call answered 200 has its row; none answered without one
    assert all(r["StatusCode"] == 200 for r in rows)


def test_every_call_a_client_saw_complete_has_its_event_even_after_kill_9(tmp_path: Path) -> None:
    """``local up`` in its own process, calls in flight from several threads, then ``kill -9``:
    a call whose response completed had its event written first."""
    import signal
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from cli_run import clean_env

    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aoai_helpers",
            "local",
            "serve",
            "--spec",
            str(ROOT / "examples" / "gateway.yaml"),
            "--state-dir",
            str(state),
            "--db",
            f"sqlite:///{tmp_path / 'usage.db'}",
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (state / "stack.json").exists() and _stack_up(state), 120, "the stack to serve"
        )
        info = json.loads((state / "stack.json").read_text())
        register_secret(*info["keys"].values(), info["backend_key"])
        key = info["keys"]["bu-finance"]
        completed: list[bool] = []

        def one(n: int) -> None:
            try:
                status, body = raw_post(
                    info["gateway_url"], f"{CHAT}?{VERSION}", _body(), key, timeout=30
                )
                completed.append(status == 200 and b'"usage"' in body)
            except OSError:
                completed.append(False)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, n) for n in range(400)]
            wait_until(lambda: sum(completed) >= 50, 120, "some calls to complete")
            proc.send_signal(signal.SIGKILL)
            for f in futures:
                f.result()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = sum(completed)
    log = LocalEventLog(state / "events")
    with log.consumer("audit") as audit:
        events = []
        while batch := audit.receive(1000, 0.5):
            events += batch
    assert done >= 50
    assert len(events) >= done  # every completed call has its event (a few not completed may too)


def _stack_up(state: Path) -> bool:
    try:
        info = json.loads((state / "stack.json").read_text())
        host, port = info["gateway_url"].removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError, KeyError):
        return False


@pytest.mark.parametrize("capture", MODES)
def test_a_key_given_twice_is_refused(tmp_path: Path, capture: str) -> None:
    """``"stream"`` (or ``"model"``) twice: a parser keeping the first and one keeping the last
    would bill one request and serve another."""
    with stack(tmp_path, capture=capture) as s:
        body = b'{"messages": [{"role": "user", "content": "hi"}], "stream": false, "stream": true}'
        status, reply = raw_post(s.info.gateway_url, f"{CHAT}?{VERSION}", body, _key(s))
        v1 = b'{"model": "gpt-4o-mini", "input": "hi", "model": "gpt-4.1"}'
        status_v1, _ = raw_post(s.info.gateway_url, "/openai/v1/responses", v1, _key(s))
        assert s.simulator is not None and s.simulator.records == []
    assert (status, status_v1) == (400, 400) and b"more than once" in reply
