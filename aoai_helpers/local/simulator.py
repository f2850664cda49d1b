"""An Azure OpenAI data-plane simulator: a raw ASGI 3 app for local mode and tests.

What is simulated (shapes follow ``reference/azure-facts.md``, "AOAI data plane", and the
Azure OpenAI inference spec ``2024-10-21``):

- **Routes.** Classic ``POST /openai/deployments/{deployment}/{chat/completions | completions
  | embeddings}?api-version=…`` and ``POST /openai/responses?api-version=…`` (deployment in
  the body's ``model``); the v1 API ``POST /openai/v1/{chat/completions | completions |
  embeddings | responses}`` (no api-version; deployment in ``model``). Deployments and their
  models come from ``spec.backends[*].deployments`` (names matched case-insensitively).
- **Errors as Azure words them.** 401 for a missing / wrong ``api-key`` (or ``Authorization:
  Bearer``), checked first whatever the path, keys compared with ``hmac.compare_digest``;
  404 ``Resource not found`` for other paths / methods and a classic call without
  ``api-version``; 404 ``DeploymentNotFound``; 400 for a body that is not a JSON object or
  lacks ``model`` (v1) / ``messages`` / ``prompt`` / ``input``.
- **Replies.** Deterministic text from a hash of the request (its streaming options aside, so
  a streamed and a non-streamed call get the same words): up to ``max_reply_tokens``
  one-token words within the request's own limit (``max_tokens`` / ``max_completion_tokens``
  / ``max_output_tokens``, less any reasoning); ``finish_reason`` ``length`` when that limit
  cut it, else ``stop``. Chat with ``tool_choice`` ``"required"`` or a named function answers with a tool
  call whose arguments have the function's parameter names (the Responses API always answers
  with text; its ``tools`` are echoed, never called). Embeddings are deterministic unit
  vectors (``dimensions``, else 1536; 3072 for text-embedding-3-large), float or base64.
- **Usage** is what the real API reports, counted with :mod:`aoai_helpers.core.tokens` for the
  deployment's model: the prompt with ``count_prompt``; the visible output as the refitted
  estimator reassembles it (content, then tool calls as the model writes them, plus
  ``call_framing``); a reasoning model adds 64-512 seeded hidden reasoning tokens per choice
  (``reasoning_tokens``; they count toward the request's limit). ``cached_tokens``: a prompt of
  at least 1024 tokens whose message-level prefix the deployment served recently
  (:class:`PromptCache`) reports that prefix, in whole 128-token steps from 1024.
- **Streams.** Chat / completions: the Azure preamble chunk (empty ``id``/``model``/``object``,
  ``created: 0``, ``prompt_filter_results``), a role chunk per choice, one chunk per token
  with ``content_filter_results``, a ``finish_reason`` chunk per choice, with
  ``stream_options.include_usage`` a ``choices: []`` usage chunk (every other chunk then has
  ``usage: null``), then ``data: [DONE]``. Responses API: named events ``response.created`` …
  ``response.completed`` with ``sequence_number``, no ``[DONE]``. A Responses reply cut by
  ``max_output_tokens`` is ``status: incomplete`` (event ``response.incomplete``), as OpenAI's
  API does. Other real shapes are options: ``Simulator(shape=StreamShape(...))``.
- **Latency** (``spec.local.simulator``): ``ttft_ms`` before the first generated chunk (the
  preamble goes first) or before a non-streamed body, plus ``completion_tokens /
  tokens_per_second``: the reasoning part before the first generated chunk, the visible part
  spread evenly over the content chunks (all at once for a non-streamed reply). Waits go
  through the injected ``sleep``.
- **Faults** (configuration only, never prompt text): each fault counts the requests it
  matches (its ``deployments``, or all; ``stream_cut`` only counts streamed requests) and fires
  on every ``every``-th; when several fire at once the first in the spec wins.
  ``rate_limit`` → 429 with ``retry-after-ms``, ``retry-after`` (whole seconds, rounded up)
  and zero remaining-quota headers; ``server_error`` → 500; ``content_filter`` → 400 with
  Azure's ``content_filter`` / ``ResponsibleAIPolicyViolation`` body; ``stream_cut`` → after
  ``cut_after_chunks`` content chunks the app raises :class:`StreamCutError` so the server
  drops the connection mid-body (uvicorn closes the socket; httpx's ASGI transport re-raises
  the error to the client). Error faults answer at once, without latency.
- **Client disconnects** (``http.disconnect``) are noticed between chunks: generation stops.

Every request that reaches a deployment leaves one :class:`SimCall` in ``records``, appended
just before the last byte of its response is handed to the server (a client that has read
the whole response always finds it) or when the stream is cut / the client disconnects.
Choices made: an error (429/500/400) records ``usage=None`` (nothing was served); a cut or
disconnected stream records status 200, ``cut=True`` and the usage actually consumed: the
prompt plus the output tokens of the chunks sent so far and all reasoning tokens (the model
reasons before it writes). ``response_id`` is the body's ``id`` (``chatcmpl-…``, ``cmpl-…``,
``resp_…``), else the ``x-request-id``.

The ``x-ratelimit-remaining-*`` headers count down from fixed per-minute quotas
(:data:`REQUESTS_PER_MINUTE`, :data:`TOKENS_PER_MINUTE`) that are reported, never enforced.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from aoai_helpers.local.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    lifespan,
    read_whole,
    send_whole,
)
from aoai_helpers.local.replies import (
    CACHE_MIN_TOKENS,
    Frame,
    Plan,
    StreamShape,
    billed_tokens,
    cached_prefix_tokens,
    embeddings_body,
    make_plan,
    prefix_keys,
    reply_body,
    sent_outputs,
)
from aoai_helpers.local.replies import stream_frames as _stream_frames
from aoai_helpers.local.reply_types import (
    NOT_DEPLOYED,
    SERVER_ERROR,
    UNAUTHORIZED,
    content_filter_error,
    rate_limit_error,
)
from aoai_helpers.local.reply_types import error_body as _error
from aoai_helpers.spec import Fault, Spec

__all__ = [
    "PROMPT_CACHE_SIZE",
    "REQUESTS_PER_MINUTE",
    "TOKENS_PER_MINUTE",
    "PromptCache",
    "SimCall",
    "Simulator",
    "StreamCutError",
    "StreamShape",
]

REQUESTS_PER_MINUTE: Final = 1_000
TOKENS_PER_MINUTE: Final = 1_000_000
PROMPT_CACHE_SIZE: Final = 4096  # prefix keys remembered, all deployments together

_OPERATIONS: Final = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "responses": "responses",
}
_CLASSIC: Final = re.compile(
    r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$"
)
_V1: Final = re.compile(r"^/openai/v1/(chat/completions|completions|embeddings|responses)$")
_REQUIRED: Final = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_FAULT_STATUS: Final = {"rate_limit": 429, "server_error": 500, "content_filter": 400}


class StreamCutError(RuntimeError):
    """Raised by the app mid-stream (fault ``stream_cut``) so the server drops the connection."""


@dataclass(frozen=True)
class SimCall:
    """One request that reached a deployment, as the simulator served it.

    ``usage`` has ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    ``cached_tokens`` and ``reasoning_tokens``: what the call really consumed, whether or not
    it was reported to the client; ``None`` for an error reply. ``cut``: the stream did not
    finish (``stream_cut`` fault or client disconnect).
    """

    response_id: str
    deployment: str
    model: str
    operation: str
    stream: bool
    status: int
    usage: dict[str, int] | None
    cut: bool


@dataclass(frozen=True, slots=True)
class _Call:
    """A request routed to a deployment."""

    request_id: str
    operation: str
    deployment: str
    model: str
    api_version: str | None
    stream: bool


def _route(path: str) -> tuple[str, str | None, bool] | None:
    """(operation, deployment from the path or None, api-version required) for a known path."""
    path = path.rstrip("/")
    if match := _CLASSIC.match(path):
        return _OPERATIONS[match.group(2)], match.group(1), True
    if match := _V1.match(path):
        return _OPERATIONS[match.group(1)], None, False
    return ("responses", None, True) if path == "/openai/responses" else None


class PromptCache:
    """The prompt prefixes served recently, per deployment: an LRU of ``size`` prefix keys
    (:func:`~aoai_helpers.local.replies.prefix_keys`), safe to share between threads."""

    def __init__(self, size: int = PROMPT_CACHE_SIZE) -> None:
        self._size = max(1, size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def cached_tokens(self, plan: Plan) -> int:
        """The prompt tokens of ``plan`` served from the cache: its longest prefix seen before
        (:func:`~aoai_helpers.local.replies.cached_prefix_tokens`). Remembers its prefixes."""
        if plan.prompt_tokens < CACHE_MIN_TOKENS:
            return 0
        keys = prefix_keys(plan.operation, plan.deployment, plan.request)
        with self._lock:
            hit = next((n for n in range(len(keys), 0, -1) if keys[n - 1] in self._seen), 0)
            for key in keys:
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return cached_prefix_tokens(plan, hit) if hit else 0


class Simulator:
    """The ASGI app (``await sim(scope, receive, send)``); see the module docstring."""

    def __init__(
        self,
        spec: Spec,
        *,
        keys: Collection[str],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.time,
        shape: StreamShape | None = None,
    ) -> None:
        self._shape = shape or StreamShape()
        self._prompt_cache = PromptCache()
        self._keys = tuple(k.encode() for k in ((keys,) if isinstance(keys, str) else keys))
        self._sleep = sleep
        self._now = now
        self._config = spec.local.simulator
        self._deployments = {d.lower(): (d, m) for d, m in spec.deployment_models().items()}
        self._fault_counts = [0] * len(self._config.faults)
        self._window = (-1, 0, 0)  # minute, requests, tokens
        self.records: list[SimCall] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._authorized(headers):
            return await self._json(send, request_id, 401, _error("401", UNAUTHORIZED))
        route = _route(scope["path"])
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        api_version = (query.get("api-version") or [None])[0]
        if route is None or scope["method"] != "POST" or (route[2] and not api_version):
            return await self._json(send, request_id, 404, _error("404", "Resource not found"))
        operation, in_path, _ = route
        try:
            body = await read_whole(receive)
        except ClientGone:
            return  # the client went away before sending its request
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            message = f"We could not parse the JSON body of your request. ({exc})"
            return await self._json(send, request_id, 400, _error("BadRequest", message))
        if not isinstance(request, dict):
            message = "The request body must be a JSON object."
            return await self._json(send, request_id, 400, _error("BadRequest", message))
        name = in_path or request.get("model")
        if not isinstance(name, str) or not name:
            message = "Missing required parameter: 'model'."
            return await self._json(send, request_id, 400, _error("BadRequest", message))
        found = self._deployments.get(name.lower())
        if found is None:
            return await self._json(
                send, request_id, 404, _error("DeploymentNotFound", NOT_DEPLOYED)
            )
        required = _REQUIRED.get(operation, "input")
        if required not in request:
            message = f"Missing required parameter: '{required}'."
            return await self._json(send, request_id, 400, _error("BadRequest", message))
        stream = request.get("stream") is True and operation != "embeddings"
        call = _Call(request_id, operation, found[0], found[1], api_version, stream)
        fault = self._fault(call)
        if fault is not None and fault.kind != "stream_cut":
            return await self._fault_reply(send, call, fault)
        if operation == "embeddings":
            return await self._embeddings(send, call, request)
        plan = make_plan(
            operation,
            call.deployment,
            call.model,
            request,
            max_reply_tokens=self._config.max_reply_tokens,
            created=int(self._now()),
            shape=self._shape,
        )
        plan = replace(plan, cached_tokens=self._prompt_cache.cached_tokens(plan))
        if stream:
            return await self._stream(send, receive, call, plan, fault)
        return await self._reply(send, call, plan)

    # ------------------------------------------------------------------ auth, faults, quota

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        offered = headers.get("api-key") or None
        if offered is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            offered = token.strip() if scheme.lower() == "bearer" else None
        if not offered:
            return False
        candidate = offered.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def _fault(self, call: _Call) -> Fault | None:
        """Count ``call`` against every fault it matches; the first that fires wins."""
        fired: Fault | None = None
        for i, fault in enumerate(self._config.faults):
            if fault.deployments and call.deployment.lower() not in {
                d.lower() for d in fault.deployments
            }:
                continue
            if fault.kind == "stream_cut" and not call.stream:
                continue
            self._fault_counts[i] += 1
            if fired is None and self._fault_counts[i] % fault.every == 0:
                fired = fault
        return fired

    async def _fault_reply(self, send: Send, call: _Call, fault: Fault) -> None:
        status = _FAULT_STATUS[fault.kind]
        self._record(call, call.request_id, status, None, False)
        if fault.kind == "rate_limit":
            seconds = max(1, math.ceil(fault.retry_after_ms / 1000))
            body = rate_limit_error(call.operation, call.api_version, seconds)
            extra = [
                (b"retry-after-ms", str(fault.retry_after_ms).encode()),
                (b"retry-after", str(seconds).encode()),
            ]
            return await self._json(send, call.request_id, status, body, extra)
        if fault.kind == "server_error":
            body = _error("InternalServerError", SERVER_ERROR)
            return await self._json(send, call.request_id, status, body)
        await self._json(send, call.request_id, status, content_filter_error())

    def _record(
        self, call: _Call, response_id: str, status: int, usage: dict[str, int] | None, cut: bool
    ) -> None:
        tokens = usage["total_tokens"] if usage else 0
        self._tick(requests=1, tokens=tokens)
        self.records.append(
            SimCall(
                response_id=response_id,
                deployment=call.deployment,
                model=call.model,
                operation=call.operation,
                stream=call.stream,
                status=status,
                usage=usage,
                cut=cut,
            )
        )

    def _tick(self, *, requests: int = 0, tokens: int = 0) -> tuple[int, int]:
        minute = int(self._now() // 60)
        current, used_requests, used_tokens = self._window
        if minute != current:
            used_requests = used_tokens = 0
        self._window = (minute, used_requests + requests, used_tokens + tokens)
        return (
            max(0, REQUESTS_PER_MINUTE - self._window[1]),
            max(0, TOKENS_PER_MINUTE - self._window[2]),
        )

    # ------------------------------------------------------------------ replies

    def _headers(
        self, request_id: str, status: int, content_type: bytes
    ) -> list[tuple[bytes, bytes]]:
        remaining = (0, 0) if status == 429 else self._tick()
        return [
            (b"content-type", content_type),
            (b"apim-request-id", request_id.encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-ratelimit-remaining-requests", str(remaining[0]).encode()),
            (b"x-ratelimit-remaining-tokens", str(remaining[1]).encode()),
        ]

    async def _json(
        self,
        send: Send,
        request_id: str,
        status: int,
        body: Any,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        data = orjson.dumps(body)
        headers = self._headers(request_id, status, b"application/json")
        headers += [(b"content-length", str(len(data)).encode()), *(extra or [])]
        await send_whole(send, status, headers, data)

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await self._sleep(seconds)

    def _generation_time(self, completion_tokens: int) -> float:
        tps = self._config.tokens_per_second
        return completion_tokens / tps if tps > 0 else 0.0

    async def _reply(self, send: Send, call: _Call, plan: Plan) -> None:
        await self._wait(self._config.ttft_ms / 1000)
        await self._wait(self._generation_time(plan.completion_tokens))
        body = reply_body(plan, self._now())
        self._record(call, plan.response_id, 200, plan.usage(), False)
        await self._json(send, call.request_id, 200, body)

    async def _embeddings(self, send: Send, call: _Call, request: Mapping[str, Any]) -> None:
        await self._wait(self._config.ttft_ms / 1000)
        body, prompt = embeddings_body(request, call.model)
        usage = dict.fromkeys(("completion_tokens", "cached_tokens", "reasoning_tokens"), 0)
        usage |= {"prompt_tokens": prompt, "total_tokens": prompt}
        self._record(call, call.request_id, 200, usage, False)
        await self._json(send, call.request_id, 200, body)

    async def _stream(
        self, send: Send, receive: Receive, call: _Call, plan: Plan, fault: Fault | None
    ) -> None:
        """Send ``plan`` as SSE, pacing content chunks; cut it for a ``stream_cut`` fault."""
        frames = _stream_frames(plan, self._now())
        n_content = sum(f.stage == "content" for f in frames)
        visible = self._generation_time(plan.completion_tokens - plan.reasoning_tokens)
        per_chunk = visible / n_content if n_content else 0.0  # no content: no tokens
        first_wait = self._config.ttft_ms / 1000 + self._generation_time(plan.reasoning_tokens)
        sent: dict[int, dict[str, str]] = {}
        headers = self._headers(call.request_id, 200, b"text/event-stream; charset=utf-8")
        headers.append((b"cache-control", b"no-cache"))
        watcher = asyncio.ensure_future(receive())  # resolves on http.disconnect
        content_sent, generating = 0, False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for i, frame in enumerate(frames):
                if frame.stage != "pre":
                    if fault is not None and content_sent == fault.cut_after_chunks:
                        self._record_stream(call, plan, sent, cut=True)
                        raise StreamCutError(
                            f"simulated stream cut after {content_sent} content chunks"
                        )
                    if not generating:
                        generating = True
                        await self._wait(first_wait)
                if frame.stage == "content":
                    await self._wait(per_chunk)
                    content_sent += 1
                if watcher.done():  # the client disconnected
                    return self._record_stream(call, plan, sent, cut=True)
                last = i == len(frames) - 1
                if last:
                    self._record_stream(call, plan, sent, cut=False)
                message = {"type": "http.response.body", "body": frame.data, "more_body": not last}
                try:
                    await send(message)
                except OSError:  # a server that reports a disconnect from send() (ASGI 2.4)
                    return None if last else self._record_stream(call, plan, sent, cut=True)
                _account(sent, frame)
        finally:
            if not watcher.done():
                watcher.cancel()  # not awaited: that could swallow our own cancellation
            elif not watcher.cancelled():
                watcher.exception()  # retrieved, so asyncio does not log it

    def _record_stream(
        self, call: _Call, plan: Plan, sent: dict[int, dict[str, str]], *, cut: bool
    ) -> None:
        if cut:
            outputs, hidden = sent_outputs(plan, sent), [c.reasoning for c in plan.choices]
            completion = billed_tokens(outputs, hidden, plan.model, plan.operation, plan.request)
        else:
            completion = plan.completion_tokens
        usage = plan.usage() | {
            "completion_tokens": completion,
            "total_tokens": plan.prompt_tokens + completion,
        }
        self._record(call, plan.response_id, 200, usage, cut)


def _account(sent: dict[int, dict[str, str]], frame: Frame) -> None:
    """Add the output ``frame`` delivers to ``sent`` (choice → field → text so far)."""
    if frame.choice >= 0:
        parts = sent.setdefault(frame.choice, {"content": "", "name": "", "arguments": ""})
        parts[frame.field] += frame.text
