"""The APIM-emulating gateway (local mode): what APIM does with this project's policies.

An ASGI app configured from the same :class:`~aoai_helpers.spec.Spec` as APIM. Per request:

1. **Refuse malformed requests**: a header name or value holding CR, LF or NUL (header
   injection; real HTTP servers refuse these before any app sees them) → 400, before
   anything else.
2. **Authenticate** the caller by its subscription key, from the first of, in this order:
   header ``api-key`` (the API's subscription-key header), header
   ``Ocp-Apim-Subscription-Key``, query ``subscription-key``. The first one present decides —
   the others are ignored, never tried as a fallback: a valid ``api-key`` with another BU's
   key in ``Ocp-Apim-Subscription-Key`` is billed to the ``api-key``'s subscription, and an
   invalid ``api-key`` is a 401 whatever the other header holds. A credential header sent
   twice is a 401 (APIM joins repeated header values with a comma, which matches no key).
   The key is looked up by its SHA-256 digest, then compared with
   :func:`hmac.compare_digest`, so the time taken does not depend on how much of a guess
   matches. Missing or unknown key → 401 with APIM's message, and the backend is never
   touched (APIM checks subscriptions before any policy runs, so no event is logged either).
   The event names the subscription the key belongs to — never one the caller claims in a
   header, the query or the body.
3. **Limit the body**: a request body larger than ``max_body_bytes`` (default
   :data:`DEFAULT_MAX_BODY_BYTES`, 8 MiB) → 413 with an APIM-style JSON body, without reading
   the rest, forwarding or logging an event. A declared ``Content-Length`` over the limit is
   refused before reading anything; a chunked body is counted as it arrives. A client that
   goes away before its body is complete gets nothing forwarded and logs no event either.
4. **Swap credentials**: the caller's key never reaches AOAI, nor its own ``Authorization``
   header; the backend gets the gateway's ``api-key`` (``auth: key``) or
   ``Authorization: Bearer`` (``auth: managed_identity``, what
   ``authentication-managed-identity`` adds). ``Host`` is the backend's, and client-supplied
   forwarding headers (``Forwarded``, ``X-Forwarded-*``) are not passed on.
5. **Forward and stream back** according to the capture mode:

   - ``passthrough`` — streamed responses go to the client chunk by chunk as they arrive
     (APIM ``forward-request buffer-response="false"``); the policy never reads the body, so
     the event has no usage and carries the request, for prompt-only accounting until
     reconciliation.
   - ``passthrough_usage`` — the same, with ``stream_options.include_usage`` injected into
     streamed chat and completions requests (for the api-versions configured as accepting it,
     and always on the v1 API): the stream ends with AOAI's usage chunk, which the client
     sees too.
   - ``buffered`` — ``include_usage`` is injected the same way, the whole response is buffered
     (the client gets it only at the end, as with APIM reading ``context.Response.Body``), the
     usage numbers are read from the final usage chunk (Responses API: ``response.completed``)
     and, when the client had not asked for it, the usage chunk is removed from what the
     client receives (as the policy's ``set-body`` does), so ``choices[0]`` stays safe.

   Non-streamed bodies are read in every mode (usage from the body).
6. **Log one v2 event** (ARCHITECTURE.md §3, fields in :data:`~aoai_helpers.events.V2_FIELDS`
   order) after the response has completed — also for 4xx/5xx answers and for a client that
   disconnected mid-stream — through the ``sink`` (see :class:`EventSink`), off the event
   loop. No prompt or completion text is logged unless it is needed to estimate usage (the
   request, when the response reported none) or ``capture.payload`` is on; the event stays
   well below the 200 KB ``log-to-eventhub`` limit.
7. **Feed the language-model log** (APIM's ``GatewayLlmLogs`` diagnostic): every forwarded
   call goes to ``llm_sink`` as an :class:`~aoai_helpers.local.llm_records.Exchange` — the
   request and the response as it went by. A pass-through stream is observed chunk by chunk
   as it is relayed (each chunk is kept after it was sent; nothing is parsed on the way),
   which is what lets the log know a pass-through stream's usage that the event cannot.
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
from ..clock import now
from ..events import LOG_TO_EVENTHUB_LIMIT, V2_FIELDS, operation_from_path
from ..spec import Backend, CaptureMode, Spec, Subscription
from ..usage import summarize_stream, usage_from_body
from .llm_records import Exchange

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "OPERATION_IDS",
    "BackendCut",
    "Gateway",
    "build_event",
    "shrink_request",
    "strip_usage_chunk",
]

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
#: Largest request body forwarded (bytes). No documented AOAI request-size limit was found;
#: 8 MiB is far above any real prompt (a 128k-token context is well under 1 MiB of JSON) and
#: bounds what one caller can make the gateway buffer.
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
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
#: Headers naming the caller's credential; each may appear once.
_CREDENTIAL_HEADERS: Final = (b"api-key", b"ocp-apim-subscription-key")
_BAD_HEADER_BYTES: Final = re.compile(rb"[\r\n\x00]")
_DIGITS: Final = re.compile(r"[0-9]{1,18}")
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
_BAD_HEADER: Final = (
    b'{"statusCode": 400, "message": "Bad request: a header name or value contains CR, LF or NUL."}'
)
_BAD_LENGTH: Final = b'{"statusCode": 400, "message": "Bad request: invalid Content-Length."}'
_BACKEND_DOWN: Final = b'{"statusCode": 500, "message": "Internal server error"}'


class BackendCut(Exception):
    """Raised into the ASGI server to abort a client connection whose backend stream was cut."""


EventSink = Callable[[bytes], None]
"""Receives each serialized event; must not block (the stack's sink queues to a writer thread)."""
LlmSink = Callable[[Exchange], None]
"""Receives each forwarded call for the language-model log; must not block either."""


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
    asked_usage: bool = False  # the client's own stream_options.include_usage


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
    the simulator); ``transport`` replaces the network (tests: ``httpx.ASGITransport``);
    ``max_body_bytes`` is the largest request body accepted (larger: 413); ``clock`` stamps
    each call's ``ExecTimeUTC`` (default: the current UTC time; the demo-traffic generator
    passes a simulated clock to spread calls over past days).
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
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], datetime] | None = None,
        llm_sink: LlmSink | None = None,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self.spec = spec
        self.max_body_bytes = max_body_bytes
        self._clock = clock or now
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
        self._llm_sink = llm_sink
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
        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        if any(_BAD_HEADER_BYTES.search(k + v) for k, v in raw_headers):
            await _respond(send, 400, _BAD_HEADER)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        path: str = scope["path"]
        key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
        if key is None:
            key = next((v for k, v in query if k == "subscription-key"), None)
        if not key:
            await _respond(send, 401, _MISSING_KEY)
            return
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        repeated = any(
            sum(k.lower() == name for k, _v in raw_headers) > 1 for name in _CREDENTIAL_HEADERS
        )
        if found is None or repeated or not hmac.compare_digest(found[0].encode(), key.encode()):
            await _respond(send, 401, _INVALID_KEY)
            return
        if not path.startswith("/openai/") or scope["method"] != "POST":
            await _respond(send, 404, _NOT_FOUND)
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                await _respond(send, 400, _BAD_LENGTH)
                return
            if int(declared) > self.max_body_bytes:
                await _respond(send, 413, _too_large(self.max_body_bytes))
                return
        try:
            raw = await _read_body(receive, self.max_body_bytes)
        except _ClientGone:
            return  # the client left before its body was complete: nothing forwarded, no event
        if raw is None:  # too large: nothing forwarded, no event
            await _respond(send, 413, _too_large(self.max_body_bytes))
            return
        call = self._describe(found[1], path, query, raw)
        forwarded = self._maybe_inject_usage(call, raw)
        injected = forwarded is not raw
        await self._forward(call, scope, headers, query, forwarded, receive, send, injected)

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
        options = body.get("stream_options") if body is not None else None
        return _Call(
            asked_usage=isinstance(options, dict) and options.get("include_usage") is True,
            request_id=str(uuid.uuid4()),
            started=self._clock(),
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
        """Buffered and passthrough_usage capture: ask for the usage chunk where the
        api-version accepts it (``call.asked_usage`` says whether the client asked itself)."""
        if self.capture == "passthrough" or not call.streaming or call.body is None:
            return raw
        if call.operation not in ("chat", "completions"):
            return raw
        if not (call.v1 or call.api_version in self._include_usage):
            return raw
        if call.asked_usage:
            return raw
        options = call.body.get("stream_options")
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
        injected: bool = False,
    ) -> None:
        backend = self._backend(call)
        out_headers = {
            k: v
            for k, v in headers.items()
            if k not in _HOP_BY_HOP and k != "forwarded" and not k.startswith("x-forwarded-")
        }
        if backend.auth == "key":
            out_headers["api-key"] = self._secret
        else:
            out_headers["authorization"] = f"Bearer {self._secret}"
        qs = urlencode([(k, v) for k, v in query if k != "subscription-key"])
        url = self._urls[backend.name] + call.path + (f"?{qs}" if qs else "")
        status, model, usage, text = 500, None, None, None
        relayed: list[bytes] = []  # a pass-through stream, as it went by
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
                if is_sse and self.capture != "buffered":
                    await self._pass_through(response, resp_headers, receive, send, relayed)
                else:
                    try:
                        body = await response.aread()
                    except httpx.HTTPError:
                        status = 500  # what the client gets; the event records the same
                        await _respond(send, 500, _BACKEND_DOWN)  # nothing was sent yet
                        return
                    text = body.decode("utf-8", errors="replace")
                    model, usage = _usage_of(text, is_sse)
                    if is_sse and injected:
                        body = strip_usage_chunk(body)  # the chunk the gateway asked for
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
            if self._llm_sink is not None:
                seen = b"".join(relayed).decode("utf-8", errors="replace") if relayed else text
                self._llm_sink(
                    Exchange(
                        call.request_id,
                        call.started,
                        call.operation,
                        call.deployment,
                        call.api_version,
                        call.streaming,
                        status,
                        call.body,
                        seen,
                        usage,
                        model,
                    )
                )

    async def _pass_through(
        self,
        response: httpx.Response,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        relayed: list[bytes],
    ) -> None:
        """Stream the backend body to the client as it arrives; stop if the client goes away.

        Each chunk is appended to ``relayed`` after it was sent (for the language-model log).
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
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    relayed.append(chunk)
            except httpx.HTTPError as exc:
                # The backend dropped the connection mid-body: drop the client's too (as APIM
                # does when not buffering), rather than end a cut stream as if complete.
                raise BackendCut("backend closed the stream before its end") from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


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


class _ClientGone(Exception):
    """The client disconnected before sending its whole request body."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; ``None`` once it exceeds ``limit`` bytes (the rest is not read).

    Raises :class:`_ClientGone` if the client disconnects first.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def _too_large(limit: int) -> bytes:
    """APIM-style 413 body."""
    return (
        b'{"statusCode": 413, "message": "Request entity too large: the request body exceeds '
        + str(limit).encode()
        + b' bytes."}'
    )


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
