"""The APIM-emulating gateway (local mode): what APIM does with this project's policies.

An ASGI app configured from the same :class:`~aoai_helpers.spec.Spec` as APIM. Per request:

1. **Authenticate** the caller by its subscription key: header ``api-key`` (the API's
   subscription-key header), ``Ocp-Apim-Subscription-Key``, or query ``subscription-key``. The
   key is looked up by its SHA-256 digest, then compared with :func:`hmac.compare_digest`, so
   the time taken does not depend on how much of a guess matches. Missing or unknown key →
   401 with APIM's message, and the backend is never touched (APIM checks subscriptions
   before any policy runs, so no event is logged either).
2. **Swap credentials**: the caller's key never reaches AOAI; the backend gets its own
   ``api-key`` (``auth: key``) or ``Authorization: Bearer`` (``auth: managed_identity``, what
   ``authentication-managed-identity`` adds).
3. **Forward and stream back** according to the capture mode:

   - ``passthrough`` — streamed responses go to the client chunk by chunk as they arrive
     (APIM ``forward-request buffer-response="false"``); the body is never read, so the
     event has no usage and carries the request, for prompt-only accounting.
   - ``buffered`` — ``stream_options.include_usage`` is injected into streamed chat and
     completions requests (for the api-versions configured as accepting it, and always on
     the v1 API), the whole response is buffered (the client gets it only at the end, as
     with APIM reading ``context.Response.Body``), and the usage numbers are read from the
     final usage chunk (Responses API: ``response.completed``).

   Non-streamed bodies are read in both modes (usage from the body).
4. **Log one v2 event** (ARCHITECTURE.md §3, fields in :data:`~aoai_helpers.events.V2_FIELDS`
   order) after the response has completed — also for 4xx/5xx answers and for a client that
   disconnected mid-stream — through the ``sink`` (see :class:`EventSink`), off the event
   loop. No prompt or completion text is logged unless it is needed to estimate usage (the
   request, when the response reported none) or ``capture.payload`` is on; the event stays
   well below the 200 KB ``log-to-eventhub`` limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson

from ..apim.policy import policy_settings
from ..events import LOG_TO_EVENTHUB_LIMIT, V2_FIELDS, operation_from_path
from ..spec import Backend, CaptureMode, Spec, Subscription
from ..usage import summarize_stream, usage_from_body

__all__ = ["OPERATION_IDS", "BackendCut", "Gateway", "build_event", "shrink_request"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: APIM ``context.Operation.Id`` per (operation, v1 path?): the imported inference spec's ids
#: for the classic paths, the wildcard operations the provisioning adds for the v1 API.
OPERATION_IDS: Final[dict[tuple[str, bool], str]] = {
    ("chat", False): "ChatCompletions_Create",
    ("completions", False): "Completions_Create",
    ("embeddings", False): "embeddings_create",
    ("responses", False): "responses_create",
    ("other", False): "other",
    ("chat", True): "v1_chat_completions",
    ("completions", True): "v1_completions",
    ("embeddings", True): "v1_embeddings",
    ("responses", True): "v1_responses",
    ("other", True): "v1_other",
}
#: Budget for the whole event (the logger truncates at 200 KB; keep a wide margin).
EVENT_BUDGET: Final = LOG_TO_EVENTHUB_LIMIT // 2
_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/")
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
_RESPONSE_DROP: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "server"}
)
_MISSING_KEY: Final = (
    b'{"statusCode": 401, "message": "Access denied due to missing subscription key. Make sure '
    b'to include subscription key when making requests to an API."}'
)
_INVALID_KEY: Final = (
    b'{"statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure '
    b'to provide a valid key for an active subscription."}'
)
_NOT_FOUND: Final = b'{"statusCode": 404, "message": "Resource not found"}'
_BACKEND_DOWN: Final = b'{"statusCode": 500, "message": "Internal server error"}'


class BackendCut(Exception):
    """Raised into the ASGI server to abort a client connection whose backend stream was cut."""


EventSink = Callable[[bytes], None]
"""Receives each serialized event; must not block (the stack's sink queues to a writer thread)."""


def _iso_ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def shrink_request(request: dict[str, Any], budget: int) -> dict[str, Any]:
    """The request, its JSON cut to at most ``budget`` bytes by capping its longest strings.

    Every string longer than a cap ``L`` keeps its first ``L`` characters and ends with ``…``;
    ``L`` is the largest cap that fits (binary search), so long strings are cut evenly and the
    JSON shape is kept (ingest can still count what is left). Counting a shrunk request
    underestimates its prompt: it only happens for prompts of tens of thousands of tokens, and
    is visible in the event (``"_truncated": true``). The input is not modified.
    """
    if len(orjson.dumps(request)) <= budget:
        return request
    inner = budget - len(b',"_truncated":true')
    longest = _longest_string(request)
    lo, hi = -1, longest  # invariant: cap ``lo`` fits (-1: nothing fits), cap ``hi`` does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(orjson.dumps(_capped(request, mid))) <= inner:
            lo = mid
        else:
            hi = mid
    if lo < 0:
        return {"_truncated": True}
    shrunk: dict[str, Any] = _capped(request, lo)
    shrunk["_truncated"] = True
    return shrunk


def _longest_string(node: Any) -> int:
    if isinstance(node, str):
        return len(node)
    if isinstance(node, dict):
        return max((_longest_string(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return max((_longest_string(v) for v in node), default=0)
    return 0


def _capped(node: Any, cap: int) -> Any:
    if isinstance(node, str):
        return node if len(node) <= cap else node[:cap] + "…"
    if isinstance(node, dict):
        return {k: _capped(v, cap) for k, v in node.items()}
    if isinstance(node, list):
        return [_capped(v, cap) for v in node]
    return node


@dataclass(frozen=True, slots=True)
class _Call:
    """What the gateway knows of one request before forwarding it."""

    request_id: str
    started: datetime
    subscription: Subscription
    path: str
    operation: str
    v1: bool
    deployment: str | None
    api_version: str | None
    streaming: bool
    body: dict[str, Any] | None


def build_event(
    spec: Spec,
    call: _Call,
    *,
    status: int,
    model: str | None,
    usage: Mapping[str, int] | None,
    response_text: str | None = None,
) -> dict[str, Any]:
    """The v2 event for one call, fields in :data:`V2_FIELDS` order (what the policy logs)."""
    payload = policy_settings(spec).payload
    ok = 200 <= status <= 299
    request: dict[str, Any] | None = None
    if call.body is not None and (payload or (usage is None and ok)):
        request = shrink_request(call.body, EVENT_BUDGET // 2)
    response: str | None = None
    if payload and response_text is not None:
        encoded = response_text.encode()
        response = encoded[: EVENT_BUDGET // 3].decode(errors="ignore")
    sub = call.subscription
    event = {
        "EventVersion": 2,
        "RequestId": call.request_id,
        "ExecTimeUTC": _iso_ms(call.started),
        "GatewayRegion": spec.apim.region,
        "GatewayServiceName": spec.apim.service_name,
        "SubscriptionId": sub.id,
        "SubscriptionName": sub.display_name,
        "ProductName": spec.product.display_name,
        "UserName": sub.owner_name,
        "UserEmail": sub.owner_email,
        "ApiName": spec.apim.api_display_name,
        "OperationId": OPERATION_IDS[(call.operation, call.v1)],
        "Operation": call.operation,
        "DeploymentName": call.deployment,
        "ApiVersion": call.api_version,
        "IsStreaming": call.streaming,
        "StatusCode": status,
        "Model": model,
        "Usage": dict(usage) if usage is not None else None,
        "Request": request,
        "ResponseString": response,
    }
    assert tuple(event) == V2_FIELDS  # the contract's field list and order (one source)
    return event


class Gateway:
    """ASGI app emulating APIM in front of AOAI (see the module docstring).

    ``keys`` maps APIM subscription id → key; ``backend_secret`` is what the backend expects
    (its api-key, or the bearer token standing in for the managed identity's);
    ``backend_urls`` overrides backend endpoints by backend name (local mode points them all at
    the simulator); ``transport`` replaces the network (tests: ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        spec: Spec,
        *,
        keys: Mapping[str, str],
        backend_secret: str,
        sink: EventSink,
        backend_urls: Mapping[str, str] | None = None,
        capture: CaptureMode | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.spec = spec
        settings = policy_settings(spec)  # what the APIM policy reads from its named values
        self.capture: CaptureMode = capture or settings.capture
        by_id = {s.id: s for s in spec.subscriptions}
        unknown = sorted(set(keys) - set(by_id))
        if unknown:
            raise ValueError(f"keys for unknown subscriptions: {', '.join(unknown)}")
        self._by_digest = {
            hashlib.sha256(key.encode()).digest(): (key, by_id[sid]) for sid, key in keys.items()
        }
        self._secret = backend_secret
        self._sink = sink
        self._urls = {b.name: (backend_urls or {}).get(b.name, b.endpoint) for b in spec.backends}
        self._include_usage = frozenset(settings.include_usage_api_versions)
        self._client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(timeout, connect=10.0)
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.aclose)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        path: str = scope["path"]
        key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
        if key is None:
            key = next((v for k, v in query if k == "subscription-key"), None)
        if not key:
            await _respond(send, 401, _MISSING_KEY)
            return
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        if found is None or not hmac.compare_digest(found[0].encode(), key.encode()):
            await _respond(send, 401, _INVALID_KEY)
            return
        if not path.startswith("/openai/") or scope["method"] != "POST":
            await _respond(send, 404, _NOT_FOUND)
            return
        raw = await _read_body(receive)
        call = self._describe(found[1], path, query, raw)
        raw = self._maybe_inject_usage(call, raw)
        await self._forward(call, scope, headers, query, raw, receive, send)

    def _describe(
        self, sub: Subscription, path: str, query: list[tuple[str, str]], raw: bytes
    ) -> _Call:
        body: dict[str, Any] | None
        try:
            parsed = orjson.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        except orjson.JSONDecodeError:
            body = None
        v1 = path.startswith("/openai/v1/")
        m = _DEPLOYMENT.match(path)
        deployment = m.group(1) if m else None
        if deployment is None and body is not None and isinstance(body.get("model"), str):
            deployment = body["model"]
        api_version = next((v for k, v in query if k == "api-version"), None)
        return _Call(
            request_id=str(uuid.uuid4()),
            started=datetime.now(UTC),
            subscription=sub,
            path=path,
            operation=operation_from_path(path),
            v1=v1,
            deployment=deployment,
            api_version=api_version,
            streaming=body is not None and body.get("stream") is True,
            body=body,
        )

    def _maybe_inject_usage(self, call: _Call, raw: bytes) -> bytes:
        """Buffered capture: ask for the usage chunk where the api-version accepts it."""
        if not (self.capture == "buffered" and call.streaming and call.body is not None):
            return raw
        if call.operation not in ("chat", "completions"):
            return raw
        if not (call.v1 or call.api_version in self._include_usage):
            return raw
        options = call.body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return raw
        injected = dict(call.body)
        injected["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return orjson.dumps(injected)

    def _backend(self, call: _Call) -> Backend:
        found = self.spec.backend_for(call.deployment) if call.deployment else None
        return found or self.spec.backends[0]

    async def _forward(
        self,
        call: _Call,
        scope: Scope,
        headers: dict[str, str],
        query: list[tuple[str, str]],
        raw: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        backend = self._backend(call)
        out_headers = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        if backend.auth == "key":
            out_headers["api-key"] = self._secret
        else:
            out_headers["authorization"] = f"Bearer {self._secret}"
        qs = urlencode([(k, v) for k, v in query if k != "subscription-key"])
        url = self._urls[backend.name] + call.path + (f"?{qs}" if qs else "")
        status, model, usage, text = 500, None, None, None
        try:
            request = self._client.build_request("POST", url, headers=out_headers, content=raw)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError:
                await _respond(send, 500, _BACKEND_DOWN)
                return
            status = response.status_code
            resp_headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.lower() not in _RESPONSE_DROP
            ]
            is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
            try:
                if is_sse and self.capture == "passthrough":
                    await self._pass_through(response, resp_headers, receive, send)
                else:
                    try:
                        body = await response.aread()
                    except httpx.HTTPError:
                        await _respond(send, 500, _BACKEND_DOWN)  # nothing was sent yet
                        return
                    text = body.decode("utf-8", errors="replace")
                    model, usage = _usage_of(text, is_sse)
                    start = {
                        "type": "http.response.start",
                        "status": status,
                        "headers": resp_headers,
                    }
                    await send(start)
                    await send({"type": "http.response.body", "body": body, "more_body": False})
            finally:
                await response.aclose()
        finally:
            event = build_event(
                self.spec, call, status=status, model=model, usage=usage, response_text=text
            )
            self._sink(orjson.dumps(event))

    async def _pass_through(
        self,
        response: httpx.Response,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> None:
        """Stream the backend body to the client as it arrives; stop if the client goes away."""
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
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                # The backend dropped the connection mid-body: drop the client's too (as APIM
                # does when not buffering), rather than end a cut stream as if complete.
                raise BackendCut("backend closed the stream before its end") from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _usage_of(text: str, is_sse: bool) -> tuple[str | None, dict[str, int] | None]:
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


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _lifespan(
    receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
