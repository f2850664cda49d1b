"""The v2 event the local gateway logs for one call, as the APIM policy does
(:data:`~aoai_helpers.core.events.V2_FIELDS` order): :class:`GatewayCall` (what the gateway knows
of a request), :func:`build_event` and :func:`safe_event` (which cannot fail). Imports ``core``,
``azure.apim`` (the policy's settings, the logged owner) and the top level.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from aoai_helpers.azure.apim.policy import (
    policy_settings,
)
from aoai_helpers.azure.apim.resources import logged_owner
from aoai_helpers.core.events import LOG_TO_EVENTHUB_LIMIT, V2_FIELDS
from aoai_helpers.core.shrink import shrink_request
from aoai_helpers.local.limits import TokenLimiter
from aoai_helpers.local.llm_records import Exchange
from aoai_helpers.spec import Spec, Subscription

__all__ = [
    "BIG_BODY",
    "DURABLE_TIMEOUT",
    "EVENT_BUDGET",
    "OPERATION_IDS",
    "CallLog",
    "EventSink",
    "GatewayCall",
    "LlmSink",
    "build_event",
    "new_request_id",
    "safe_event",
]

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


def _uuid4(random: bytes) -> str:
    """``str(uuid.UUID(bytes=random, version=4))``: version 4, RFC 4122 variant, lower-case
    8-4-4-4-12 hex, without ``uuid.UUID``'s arithmetic."""
    b = bytearray(random)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_BATCH: Final = 64
_ready: list[str] = []
if hasattr(os, "register_at_fork"):  # a forked child must never hand out its parent's ids
    os.register_at_fork(after_in_child=_ready.clear)


def new_request_id() -> str:
    """A fresh ``RequestId``, as ``str(uuid.uuid4())`` makes one (16 bytes of the OS's
    randomness each), made :data:`_BATCH` at a time so a call rarely waits for the OS. Safe
    across threads (``list.pop`` is atomic; two threads refilling at once only make more) and
    forks (a child starts with none ready)."""
    try:
        return _ready.pop()
    except IndexError:
        pool = os.urandom(16 * _BATCH)
        fresh = [_uuid4(pool[i : i + 16]) for i in range(0, len(pool), 16)]
        mine = fresh.pop()
        _ready.extend(fresh)
        return mine


def _iso_ms(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class GatewayCall:
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
    call: GatewayCall,
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
    call: GatewayCall,
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


#: Bodies larger than this are parsed off the event loop (a thread).
BIG_BODY: Final = 256 * 1024
#: How long a response waits for its event to be written before it is not served.
DURABLE_TIMEOUT: Final = 10.0


EventSink = Callable[[bytes], "concurrent.futures.Future[None] | None"]
"""Receives each serialized event; must not block (the stack's sink queues to a writer thread).
It may return a future that completes when the event is durably written: the gateway then waits
for it before it completes the response (and does not serve the call if it fails)."""
LlmSink = Callable[[Exchange], object]
"""Receives each forwarded call for the language-model log; must not block either."""


class CallLog:
    """Where a forwarded call goes once it ended: its event to ``sink``, the exchange to
    ``llm_sink`` (the language-model log), its tokens to the ``limiter``."""

    def __init__(
        self, spec: Spec, sink: EventSink, llm_sink: LlmSink | None, limiter: TokenLimiter
    ) -> None:
        self.spec = spec
        self._sink = sink
        self._llm_sink = llm_sink
        self.limiter = limiter

    async def log(
        self,
        call: GatewayCall,
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
        event = await asyncio.to_thread(build) if call.body_bytes > BIG_BODY else build()
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

    async def log_durably(
        self,
        call: GatewayCall,
        status: int,
        model: str | None,
        usage: Mapping[str, int] | None,
        text: str | None,
        relayed: list[bytes],
    ) -> bool:
        """:meth:`log`, then wait until the event is written (when the sink says when)."""
        pending = await self.log(call, status, model, usage, text, relayed)
        if not isinstance(pending, concurrent.futures.Future):
            return True
        try:
            await asyncio.wait_for(asyncio.wrap_future(pending), DURABLE_TIMEOUT)
        except Exception:
            return False
        return True
