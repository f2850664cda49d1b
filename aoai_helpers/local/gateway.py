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
6. **Log one v2 event** (ARCHITECTURE.md §3, fields in :data:`~aoai_helpers.core.events.V2_FIELDS`
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
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson

from aoai_helpers.azure.apim.policy import (
    BACKEND_ERROR_MESSAGE,
    BACKEND_TIMEOUT_MESSAGE,
    policy_settings,
)
from aoai_helpers.azure.apim.resources import logged_owner
from aoai_helpers.clock import now
from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT, V2_FIELDS
from aoai_helpers.core.routes import Refusal, Route, classify
from aoai_helpers.core.shrink import shrink_request
from aoai_helpers.core.usage import summarize_stream, usage_from_body
from aoai_helpers.local.limits import TokenLimiter
from aoai_helpers.local.llm_records import Exchange
from aoai_helpers.spec import Backend, CaptureMode, Spec, Subscription

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
_BAD_HEADER: Final = (
    b'{"statusCode": 400, "message": "Bad request: a header name or value contains CR, LF or NUL."}'
)
_BAD_LENGTH: Final = b'{"statusCode": 400, "message": "Bad request: invalid Content-Length."}'
#: ``stream_options`` as the gateway adds it to a body that has none (the policy's bytes).
_USAGE_OPTION: Final = b'"stream_options":{"include_usage":true},'
#: Strings Json.NET may read as dates (a superset: ISO 8601 date-times and ``/Date(…)/``).
_DATE_LIKE: Final = re.compile(r"\A([0-9]{4}-[0-9]{2}-[0-9]{2}T|/Date\()")
#: What Json.NET escapes and orjson does not (U+0085, U+2028, U+2029, UTF-8 encoded).
_JSON_NET_ESCAPES: Final = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)
_CANNOT_LOG: Final = (
    b'{"statusCode": 503, "message": "Service unavailable: the gateway cannot log calls right '
    b'now, so it does not serve them."}'
)
_DUPLICATE_KEYS: Final = "Bad request: a key appears more than once in an object of the JSON body."
_BODY_TIMEOUT: Final = (
    b'{"statusCode": 408, "message": "Request timeout: the body did not arrive in time."}'
)
#: Bodies larger than this are parsed off the event loop (a thread).
_BIG_BODY: Final = 256 * 1024
#: How long the whole request body may take to arrive.
DEFAULT_BODY_TIMEOUT: Final = 60.0
#: How long a response waits for its event to be written before it is not served.
_DURABLE_TIMEOUT: Final = 10.0


class BackendCut(Exception):
    """Raised into the ASGI server to abort a client connection whose backend stream was cut."""


EventSink = Callable[[bytes], "concurrent.futures.Future[None] | None"]
"""Receives each serialized event; must not block (the stack's sink queues to a writer thread).
It may return a future that completes when the event is durably written: the gateway then waits
for it before it completes the response (and does not serve the call if it fails)."""
LlmSink = Callable[[Exchange], object]
"""Receives each forwarded call for the language-model log; must not block either."""


def _iso_ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


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
    unmetered: str | None = None  # an allowed unmetered operation's name (routes.UNMETERED)
    body_bytes: int = 0


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
    settings = policy_settings(spec)
    payload = settings.payload
    ok = 200 <= status <= 299
    request: dict[str, Any] | None = None
    if call.body is not None and (payload or (usage is None and ok)):
        request = shrink_request(call.body, EVENT_BUDGET // 2)
    response: str | None = None
    # the reply is kept with payload capture, and when a buffered stream carries no usage
    # (an api-version that does not accept include_usage): ingest counts it then
    keep_reply = payload or (ok and usage is None and call.streaming and response_text is not None)
    if keep_reply and response_text is not None:
        encoded = response_text.encode()
        response = encoded[: EVENT_BUDGET // 3].decode(errors="ignore")
    sub = call.subscription
    # as APIM logs context.User: the owner provisioning made (none on Consumption)
    owner = logged_owner(sub) if spec.owners_logged() else (None, None)
    event = {
        "EventVersion": 2,
        "RequestId": call.request_id,
        "ExecTimeUTC": _iso_ms(call.started),
        "GatewayRegion": spec.apim.region,
        "GatewayServiceName": spec.apim.service_name,
        "SubscriptionId": sub.id,
        "SubscriptionName": sub.display_name,
        "ProductName": spec.product.display_name,
        # APIM's context.User is the subscription's owner, and there is none on Consumption
        "UserName": owner[0],
        "UserEmail": owner[1],
        "ApiName": spec.apim.api_display_name,
        "OperationId": call.unmetered or OPERATION_IDS[(call.operation, call.v1)],
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


def safe_event(
    spec: Spec,
    call: _Call,
    *,
    status: int,
    model: str | None,
    usage: Mapping[str, int] | None,
    response_text: str | None = None,
) -> bytes:
    """The serialized event of a call; it cannot fail. If building or serializing it raises,
    the event still goes out, with ``Request`` ``{"_unloggable": "<error type>"}`` (as the
    policy does): a served call always has its event."""
    try:
        event = build_event(
            spec, call, status=status, model=model, usage=usage, response_text=response_text
        )
        return orjson.dumps(event)
    except Exception as exc:
        bare = replace(call, body={"_unloggable": type(exc).__name__})
        event = build_event(spec, bare, status=status, model=model, usage=usage)
        event["Request"] = {"_unloggable": type(exc).__name__}
        return orjson.dumps(event)


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
        healthy: Callable[[], bool] | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        limiter: TokenLimiter | None = None,
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
        self._healthy = healthy or (lambda: True)
        self._body_timeout = body_timeout
        self.limiter = limiter if limiter is not None else TokenLimiter(by_id)
        self._settings = settings
        self._deployments = {d.lower(): d for d in spec.deployment_models()}
        self._urls = {b.name: (backend_urls or {}).get(b.name, b.endpoint) for b in spec.backends}
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
        sub = await self._authenticate(raw_headers, headers, query, send)
        if sub is None:
            return
        # the path as it arrived (raw_path), never the server's decoded copy: it is classified,
        # forwarded and billed as one
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.split(b"?", 1)[0].decode("latin-1")
        route = classify(scope["method"], path, self._settings.allow_unmetered)
        if isinstance(route, Refusal):
            await _respond(send, route.status, _message(route.status, route.message))
            return
        if not self._healthy():  # a call it could not log is not served
            await _respond(send, 503, _CANNOT_LOG)
            return
        limited, limit_headers = self.limiter.check(sub.id)
        if limited is not None:
            await _respond(
                send,
                limited.status,
                _message(limited.status, limited.message),
                [(b"retry-after", str(limited.retry_after).encode())],
            )
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
            raw = await asyncio.wait_for(
                _read_body(receive, self.max_body_bytes), self._body_timeout
            )
        except _ClientGone:
            return  # the client left before its body was complete: nothing forwarded, no event
        except TimeoutError:
            await _respond(send, 408, _BODY_TIMEOUT)
            return
        if raw is None:  # too large: nothing forwarded, no event
            await _respond(send, 413, _too_large(self.max_body_bytes))
            return
        if len(raw) > _BIG_BODY:  # parsing a big body must not hold the event loop
            described = await asyncio.to_thread(self._describe, sub, path, route, query, raw)
        else:
            described = self._describe(sub, path, route, query, raw)
        if isinstance(described, Refusal):
            await _respond(send, described.status, _message(described.status, described.message))
            return
        forwarded = self._maybe_inject_usage(described, raw)
        injected = forwarded is not raw
        await self._forward(
            described, scope, headers, query, forwarded, receive, send, injected, limit_headers
        )

    async def _authenticate(
        self,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        query: list[tuple[str, str]],
        send: Send,
    ) -> Subscription | None:
        """The subscription the key belongs to, or None after answering 401.

        The first credential *present* decides (``api-key``, then ``Ocp-Apim-Subscription-Key``,
        then query ``subscription-key``): an empty one is refused, never passed over.
        """
        if "api-key" in headers:
            key: str | None = headers["api-key"]
        elif "ocp-apim-subscription-key" in headers:
            key = headers["ocp-apim-subscription-key"]
        else:
            key = next((v for k, v in query if k == "subscription-key"), None)
        if not key:  # none, or an empty one: refused, never passed over for another
            await _respond(send, 401, _MISSING_KEY)
            return None
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        repeated = any(
            sum(k.lower() == name for k, _v in raw_headers) > 1 for name in _CREDENTIAL_HEADERS
        )
        if found is None or repeated or not hmac.compare_digest(found[0].encode(), key.encode()):
            await _respond(send, 401, _INVALID_KEY)
            return None
        return found[1]

    def _describe(
        self,
        sub: Subscription,
        path: str,
        route: Route,
        query: list[tuple[str, str]],
        raw: bytes,
    ) -> _Call | Refusal:
        """The call as it will be forwarded and billed, or why it is refused (not forwarded):
        a metered operation needs a JSON object body (at most ``max_json_depth`` deep) and a
        deployment of the spec (from the path, or the body's ``model`` on the v1 API)."""
        body: dict[str, Any] | None = None
        if route.operation != "unmetered":
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                return Refusal(400, "Bad request: the body must be a JSON object.")
            if _has_duplicate_keys(raw):
                # a parser keeping the first value and one keeping the last would bill one
                # request and serve another ("model" or "stream" twice): refused, as the policy does
                return Refusal(400, _DUPLICATE_KEYS)
            if _deeper_than(parsed, self._settings.max_json_depth):
                return Refusal(
                    400,
                    f"Bad request: the JSON body is nested deeper than "
                    f"{self._settings.max_json_depth} levels.",
                )
            body = parsed
        deployment = route.deployment
        if deployment is None and body is not None:
            model = body.get("model")
            if not isinstance(model, str):
                return Refusal(400, "Bad request: 'model' must name a deployment.")
            deployment = model
        if deployment is not None:
            known = self._deployments.get(deployment.lower())
            if known is None:
                return Refusal(
                    404,
                    f"The API deployment for this resource does not exist: {deployment[:64]}",
                )
            deployment = known
        api_version = next((v for k, v in query if k == "api-version"), None)
        options = body.get("stream_options") if body is not None else None
        return _Call(
            asked_usage=isinstance(options, dict) and options.get("include_usage") is True,
            request_id=str(uuid.uuid4()),
            started=self._clock(),
            subscription=sub,
            path=path,
            operation="other" if route.operation == "unmetered" else route.operation,
            v1=route.v1,
            deployment=deployment,
            api_version=api_version,
            streaming=body is not None and body.get("stream") is True,
            body=body,
            unmetered=route.unmetered,
            body_bytes=len(raw),
        )

    def _maybe_inject_usage(self, call: _Call, raw: bytes) -> bytes:
        """Buffered and passthrough_usage capture: ask for the usage chunk where the
        api-version accepts it (``call.asked_usage`` says whether the client asked itself).

        The same bytes as the policy's ``aoai-usage-body``: a body without ``stream_options``
        gets ``"stream_options":{"include_usage":true},`` right after its opening brace, every
        other byte as it came (duplicate keys were refused before); one whose
        ``stream_options`` must be amended is written again — as Json.NET writes it — only if
        that cannot change a value (no float, no string Json.NET may read as a date), else
        ``raw`` is forwarded as it is (the reply is then kept for estimation)."""
        if self.capture == "passthrough" or not call.streaming or call.body is None:
            return raw
        if call.operation not in ("chat", "completions"):
            return raw
        if not self._settings.accepts_include_usage(call.api_version, call.v1):
            return raw
        if call.asked_usage:
            return raw
        brace = len(raw) - len(raw.lstrip(b" \t\n\r"))
        if raw[brace : brace + 1] != b"{":
            return raw
        if "stream_options" not in call.body:
            return raw[: brace + 1] + _USAGE_OPTION + raw[brace + 1 :]
        if not _rewrites_losslessly(call.body):
            return raw
        options = call.body.get("stream_options")
        injected = dict(call.body)
        injected["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        text = orjson.dumps(injected)
        for char, escaped in _JSON_NET_ESCAPES:
            text = text.replace(char, escaped)
        return text

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
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Forward ``call``; log its event — durably before the response completes (the last
        bytes wait for the event log's write), or, when the call did not complete (backend down,
        stream cut, client gone), as it ended."""
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
        logged = False
        try:
            request = self._client.build_request("POST", url, headers=out_headers, content=raw)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                status = _failure_status(exc)  # what the client gets; the event says the same
                await _respond(send, status, _failure_body(status))
                return
            status = response.status_code
            resp_headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.lower() not in _RESPONSE_DROP
            ]
            resp_headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
            is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
            try:
                if is_sse and self.capture != "buffered":
                    # The status the backend sent stays the event's even when the stream is
                    # cut, before its first byte too: the client has the headers, and APIM's
                    # outbound (which logs) ran when they arrived; the prompt was processed.
                    complete = await self._pass_through(
                        response, resp_headers, receive, send, relayed
                    )
                    if complete:
                        logged = True
                        if not await self._log_durably(call, status, None, None, None, relayed):
                            raise BackendCut("the event could not be logged: the stream is cut")
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    try:
                        body = await response.aread()
                    except httpx.HTTPError as exc:
                        status = _failure_status(exc)  # what the client gets; the event too
                        await _respond(send, status, _failure_body(status))  # nothing sent yet
                        return
                    text = body.decode("utf-8", errors="replace")
                    model, usage = _usage_of(text, is_sse)
                    if is_sse and injected:
                        body = strip_usage_chunk(body)  # the chunk the gateway asked for
                    logged = True
                    if not await self._log_durably(call, status, model, usage, text, relayed):
                        await _respond(send, 503, _CANNOT_LOG)  # not served: nothing sent yet
                        return
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
            if not logged:
                await self._log(call, status, model, usage, text, relayed)

    async def _log(
        self,
        call: _Call,
        status: int,
        model: str | None,
        usage: Mapping[str, int] | None,
        text: str | None,
        relayed: list[bytes],
    ) -> Any:
        """Hand the call's event to the sink (and the call to the language-model sink); return
        what the sink returned (a future of the durable write, for the event log's writer).

        A big request is shrunk for the event off the event loop (a thread)."""
        build = functools.partial(
            safe_event, self.spec, call, status=status, model=model, usage=usage, response_text=text
        )
        event = await asyncio.to_thread(build) if call.body_bytes > _BIG_BODY else build()
        pending = self._sink(event)
        if usage is not None and 200 <= status <= 299:
            self.limiter.consume(call.subscription.id, int(usage.get("total_tokens", 0)))
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
                    subscription=call.subscription.id,
                )
            )
        return pending

    async def _log_durably(
        self,
        call: _Call,
        status: int,
        model: str | None,
        usage: Mapping[str, int] | None,
        text: str | None,
        relayed: list[bytes],
    ) -> bool:
        """:meth:`_log`, then wait until the event is written (when the sink says when)."""
        pending = await self._log(call, status, model, usage, text, relayed)
        if not isinstance(pending, concurrent.futures.Future):
            return True
        try:
            await asyncio.wait_for(asyncio.wrap_future(pending), _DURABLE_TIMEOUT)
        except Exception:
            return False
        return True

    async def _pass_through(
        self,
        response: httpx.Response,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        relayed: list[bytes],
    ) -> bool:
        """Stream the backend body to the client as it arrives; stop if the client goes away.

        Each chunk is appended to ``relayed`` after it was sent (for the language-model log).
        Returns True when the backend's body ended with the client still there: the caller
        logs the event and then sends the end of the response.
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
                        return False
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    relayed.append(chunk)
            except httpx.HTTPError as exc:
                # The backend dropped the connection mid-body: drop the client's too (as APIM
                # does when not buffering), rather than end a cut stream as if complete.
                raise BackendCut("backend closed the stream before its end") from exc
            return not gone.is_set()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def _has_duplicate_keys(raw: bytes) -> bool:
    """Whether some object of the JSON body names a key twice (the body is valid JSON)."""
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except _Duplicate:
        return True
    except (ValueError, RecursionError):
        return False  # judged by the other checks (orjson parsed it; depth is checked next)
    return False


def _failure_status(exc: httpx.HTTPError) -> int:
    """The status of a backend call that failed, as the policy's on-error sets it: 504 when
    the backend did not answer in time (APIM's ``Timeout``), 500 for anything else (a
    connection not established or dropped: ``BackendConnectionFailure``)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return 504
    return 500


def _failure_body(status: int) -> bytes:
    return _message(status, BACKEND_TIMEOUT_MESSAGE if status == 504 else BACKEND_ERROR_MESSAGE)


def _rewrites_losslessly(body: Any) -> bool:
    """Whether writing ``body`` again keeps every value: no float (its text may change) and no
    string Json.NET may parse as a date (it would write it back in another form)."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return False
        if isinstance(item, str) and _DATE_LIKE.match(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _deeper_than(node: Any, limit: int) -> bool:
    """Whether ``node`` nests lists/objects more than ``limit`` levels (iteratively)."""
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _message(status: int, message: str) -> bytes:
    """An APIM-shaped error body."""
    return orjson.dumps({"statusCode": status, "message": message})


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


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra or []
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
