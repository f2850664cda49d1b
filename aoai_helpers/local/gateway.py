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
6. **Log one v2 event** (docs/architecture.md, fields in :data:`~aoai_helpers.core.events.V2_FIELDS`
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
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, Final

import httpx

from aoai_helpers.azure.apim.policy import (
    policy_settings,
)
from aoai_helpers.clock import now
from aoai_helpers.core.routes import Refusal, Route, classify
from aoai_helpers.core.shrink import shrink_request
from aoai_helpers.local.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    lifespan,
    read_body,
    respond,
    send_whole,
)
from aoai_helpers.local.bodies import (
    parse_body,
    with_include_usage,
)
from aoai_helpers.local.events import (
    BIG_BODY,
    OPERATION_IDS,
    CallLog,
    EventSink,
    GatewayCall,
    LlmSink,
    build_event,
    new_request_id,
)
from aoai_helpers.local.events import EVENT_BUDGET as EVENT_BUDGET
from aoai_helpers.local.keys import SubscriptionKeys
from aoai_helpers.local.limits import TokenLimiter
from aoai_helpers.local.relay import (
    BAD_HEADER,
    BAD_LENGTH,
    BODY_TIMEOUT,
    CANNOT_LOG,
    BackendCut,
    apim_error,
    backend_headers,
    backend_query,
    failure_body,
    parse_query,
    pass_through,
    response_headers,
    strip_usage_chunk,
    too_large,
    usage_of,
)
from aoai_helpers.local.upstream import UpstreamError, UpstreamResponse, Upstreams
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


#: Largest request body forwarded (bytes). No documented AOAI request-size limit was found;
#: 8 MiB is far above any real prompt (a 128k-token context is well under 1 MiB of JSON) and
#: bounds what one caller can make the gateway buffer.
DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
_BAD_HEADER_BYTES: Final = re.compile(rb"[\r\n\x00]")
_DIGITS: Final = re.compile(r"[0-9]{1,18}")
#: How long the whole request body may take to arrive.
DEFAULT_BODY_TIMEOUT: Final = 60.0
#: Paths up to this long have their classification remembered (a pure function of the
#: method, the path and the spec's unmetered operations; a bounded cache).
_CACHED_PATH: Final = 256
_classify: Final = functools.lru_cache(maxsize=512)(classify)


@dataclass
class _Outcome:
    """How a forwarded call went so far (what its event says if it ends here)."""

    status: int = 500
    model: str | None = None
    usage: Mapping[str, int] | None = None
    text: str | None = None
    relayed: list[bytes] = field(default_factory=list)  # a pass-through stream, as it went by
    logged: bool = False


class Gateway:
    """ASGI app emulating APIM in front of AOAI (see the module docstring).

    ``keys`` maps APIM subscription id → key; ``backend_secret`` is what the backend expects
    (its api-key, or the bearer token standing in for the managed identity's);
    ``backend_urls`` overrides backend endpoints by backend name (local mode points them all at
    the simulator; a plain ``http://`` backend is called with the gateway's own HTTP/1.1 client,
    :mod:`.http1`, any other through httpx); ``transport`` replaces the network (tests:
    ``httpx.ASGITransport``), with httpx as the client;
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
        self._keys = SubscriptionKeys(keys, by_id)
        self._secret = backend_secret
        self._healthy = healthy or (lambda: True)
        self._body_timeout = body_timeout
        self.limiter = limiter if limiter is not None else TokenLimiter(by_id)
        self._calls = CallLog(spec, sink, llm_sink, self.limiter)
        self._settings = settings
        self._deployments = {d.lower(): d for d in spec.deployment_models()}
        # what spec.backend_for answers for each deployment it knows, asked once
        self._backend_of: dict[str, Backend] = {
            name.lower(): found
            for backend in spec.backends
            for name in backend.deployments
            if (found := spec.backend_for(name)) is not None
        }
        self._urls = {b.name: (backend_urls or {}).get(b.name, b.endpoint) for b in spec.backends}
        self._upstream = Upstreams(transport, timeout, connect_timeout=10.0)

    async def aclose(self) -> None:
        await self._upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.aclose)
            return
        if scope["type"] != "http":
            return
        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        if _BAD_HEADER_BYTES.search(b"".join(chain.from_iterable(raw_headers))):
            await respond(send, 400, BAD_HEADER)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        query = parse_query(scope.get("query_string", b"").decode("latin-1"))
        sub = await self._authenticate(raw_headers, headers, query, send)
        if sub is None:
            return
        # the path as it arrived (raw_path), never the server's decoded copy: it is classified,
        # forwarded and billed as one
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.split(b"?", 1)[0].decode("latin-1")
        unmetered = self._settings.allow_unmetered
        route = (_classify if len(path) <= _CACHED_PATH else classify)(
            scope["method"], path, unmetered
        )
        if isinstance(route, Refusal):
            await respond(send, route.status, apim_error(route.status, route.message))
            return
        if not self._healthy():  # a call it could not log is not served
            await respond(send, 503, CANNOT_LOG)
            return
        limited, limit_headers = self.limiter.check(sub.id)
        if limited is not None:
            await respond(
                send,
                limited.status,
                apim_error(limited.status, limited.message),
                [(b"retry-after", str(limited.retry_after).encode())],
            )
            return
        raw = await self._receive_body(headers, receive, send)
        if raw is None:
            return
        if len(raw) > BIG_BODY:  # parsing a big body must not hold the event loop
            described = await asyncio.to_thread(self._describe, sub, path, route, query, raw)
        else:
            described = self._describe(sub, path, route, query, raw)
        if isinstance(described, Refusal):
            await respond(send, described.status, apim_error(described.status, described.message))
            return
        forwarded = self._maybe_inject_usage(described, raw)
        injected = forwarded is not raw
        await self._forward(
            described, scope, headers, query, forwarded, receive, send, injected, limit_headers
        )

    async def _receive_body(
        self, headers: Mapping[str, str], receive: Receive, send: Send
    ) -> bytes | None:
        """The request body within ``max_body_bytes`` and the body timeout, or ``None`` after
        answering (400, 408, 413) or when the client left: nothing forwarded, no event."""
        declared = headers.get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                await respond(send, 400, BAD_LENGTH)
                return None
            if int(declared) > self.max_body_bytes:
                await respond(send, 413, too_large(self.max_body_bytes))
                return None
        try:
            async with asyncio.timeout(self._body_timeout):  # no task of its own (wait_for's)
                raw = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            return None  # the client left before its body was complete
        except TimeoutError:
            await respond(send, 408, BODY_TIMEOUT)
            return None
        if raw is None:  # too large: nothing forwarded, no event
            await respond(send, 413, too_large(self.max_body_bytes))
            return None
        return raw

    async def _authenticate(
        self,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        query: Sequence[tuple[str, str]],
        send: Send,
    ) -> Subscription | None:
        """The subscription the key belongs to, or None after answering 401.

        The first credential *present* decides (``api-key``, then ``Ocp-Apim-Subscription-Key``,
        then query ``subscription-key``): an empty one is refused, never passed over.
        """
        found = self._keys.identify(raw_headers, headers, query)
        if isinstance(found, bytes):
            await respond(send, 401, found)
            return None
        return found

    def _describe(
        self,
        sub: Subscription,
        path: str,
        route: Route,
        query: Sequence[tuple[str, str]],
        raw: bytes,
    ) -> GatewayCall | Refusal:
        """The call as it will be forwarded and billed, or why it is refused (not forwarded):
        a metered operation needs a JSON object body (at most ``max_json_depth`` deep) and a
        deployment of the spec (from the path, or the body's ``model`` on the v1 API)."""
        body: dict[str, Any] | None = None
        if route.operation != "unmetered":
            parsed = parse_body(raw, self._settings.max_json_depth)
            if isinstance(parsed, Refusal):
                return parsed
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
        return GatewayCall(
            asked_usage=isinstance(options, dict) and options.get("include_usage") is True,
            request_id=new_request_id(),
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

    def _maybe_inject_usage(self, call: GatewayCall, raw: bytes) -> bytes:
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
        return with_include_usage(raw, call.body)

    def _backend(self, call: GatewayCall) -> Backend:
        found = self._backend_of.get(call.deployment.lower()) if call.deployment else None
        return found or self.spec.backends[0]

    async def _send(
        self,
        call: GatewayCall,
        headers: Mapping[str, str],
        query: Sequence[tuple[str, str]],
        raw: bytes,
    ) -> UpstreamResponse:
        """The request to the backend: the caller's headers minus hop-by-hop, forwarding and
        credential ones, plus the gateway's own credential; the query minus the key."""
        backend = self._backend(call)
        out_headers = backend_headers(headers, backend.auth == "key", self._secret)
        qs = backend_query(query)
        target = call.path + (f"?{qs}" if qs else "")
        return await self._upstream.send(self._urls[backend.name], target, out_headers, raw)

    async def _forward(
        self,
        call: GatewayCall,
        scope: Scope,
        headers: dict[str, str],
        query: Sequence[tuple[str, str]],
        raw: bytes,
        receive: Receive,
        send: Send,
        injected: bool = False,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Forward ``call``; log its event — durably before the response completes (the last
        bytes wait for the event log's write), or, when the call did not complete (backend down,
        stream cut, client gone), as it ended."""
        out = _Outcome()
        try:
            try:
                response = await self._send(call, headers, query, raw)
            except UpstreamError as exc:
                out.status = exc.status  # what the client gets; the event says the same
                await respond(send, out.status, failure_body(out.status))
                return
            out.status = response.status_code
            resp_headers = response_headers(response, extra_headers)
            is_sse = response.content_type.startswith("text/event-stream")
            try:
                if is_sse and self.capture != "buffered":
                    await self._relay_stream(call, response, resp_headers, receive, send, out)
                else:
                    await self._relay_buffered(
                        call, response, resp_headers, is_sse, injected, send, out
                    )
            finally:
                await response.aclose()
        finally:
            if not out.logged:
                await self._calls.log(call, out.status, out.model, out.usage, out.text, out.relayed)

    async def _relay_stream(
        self,
        call: GatewayCall,
        response: UpstreamResponse,
        resp_headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        out: _Outcome,
    ) -> None:
        """A pass-through stream: relayed as it arrives; once complete, the event is written
        before the end of the response (or the stream is cut)."""
        # The status the backend sent stays the event's even when the stream is cut, before
        # its first byte too: the client has the headers, and APIM's outbound (which logs)
        # ran when they arrived; the prompt was processed.
        complete = await pass_through(response, resp_headers, receive, send, out.relayed)
        if complete:
            out.logged = True
            if not await self._calls.log_durably(call, out.status, None, None, None, out.relayed):
                raise BackendCut("the event could not be logged: the stream is cut")
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay_buffered(
        self,
        call: GatewayCall,
        response: UpstreamResponse,
        resp_headers: list[tuple[bytes, bytes]],
        is_sse: bool,
        injected: bool,
        send: Send,
        out: _Outcome,
    ) -> None:
        """A buffered body: read whole, its usage taken, the event written, then sent."""
        try:
            body = await response.aread()
        except UpstreamError as exc:
            out.status = exc.status  # what the client gets; the event too
            await respond(send, out.status, failure_body(out.status))  # nothing sent yet
            return
        out.text = body.decode("utf-8", errors="replace")
        out.model, out.usage = usage_of(out.text, is_sse)
        if is_sse and injected:
            body = strip_usage_chunk(body)  # the chunk the gateway asked for
        out.logged = True
        if not await self._calls.log_durably(
            call, out.status, out.model, out.usage, out.text, out.relayed
        ):
            await respond(send, 503, CANNOT_LOG)  # not served: nothing sent yet
            return
        await send_whole(send, out.status, resp_headers, body)
