"""Deterministic synthetic usage events (v1 and v2) for the demo, tests and benchmarks.

Events look like what the APIM policies log: v2 events with reported usage (buffered capture
or non-streamed), v2 pass-through streamed events (no usage, the request kept for a prompt
estimate), and v1 events of the original policy (non-streamed bodies in ``ResponseString``;
streamed calls with the captured, still JSON-escaped content). Same seed → same events.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from aoai_helpers.core.events import CALLER_FIELDS as _CALLER_FIELDS

__all__ = [
    "SUBSCRIPTIONS",
    "Subscription",
    "demo_events",
    "v1_from_v2",
    "v1_real_mix",
    "v1_stream_events",
    "v2_reported_events",
]


@dataclass(frozen=True, slots=True)
class Subscription:
    """An APIM subscription of a business unit."""

    sid: str
    name: str
    bu: str
    user: str
    email: str


SUBSCRIPTIONS: Final = (
    Subscription(
        "sub-finance-01", "finance-analytics", "Finance", "Ana Silva", "ana.silva@contoso.com"
    ),
    Subscription(
        "sub-marketing-01", "marketing-content", "Marketing", "Li Wei", "li.wei@contoso.com"
    ),
    Subscription("sub-rnd-01", "rnd-copilot", "R&D", "Sam Okafor", "sam.okafor@contoso.com"),
    Subscription("sub-rnd-02", "rnd-search", "R&D", "Priya Nair", "priya.nair@contoso.com"),
    Subscription("sub-legal-01", "legal-review", "Legal", "Jon Berg", "jon.berg@contoso.com"),
)

_DEPLOYMENTS: Final = (
    # deployment, model reported by the API, operation, weight
    ("gpt-4o", "gpt-4o-2024-11-20", "chat", 5),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "chat", 6),
    ("gpt-5-mini", "gpt-5-mini-2025-08-07", "responses", 2),
    ("text-embedding-3-small", "text-embedding-3-small", "embeddings", 3),
)

_WORDS: Final = [
    "invoice",
    "quarterly",
    "revenue",
    "forecast",
    "summary",
    "contract",
    "clause",
    "campaign",
    "audience",
    "draft",
    "review",
    "customer",
    "churn",
    "pipeline",
    "model",
    "search",
    "index",
    "policy",
    "risk",
    "compliance",
    "report",
    "translate",
    "email",
    "meeting",
    "notes",
    "action",
    "items",
    "budget",
    "variance",
    "product",
    "launch",
    "pricing",
    "feedback",
]

_GATEWAY: Final = {"GatewayRegion": "West Europe", "GatewayServiceName": "apim-contoso-ai"}


def _caller(sub: Subscription, operation_id: str) -> dict[str, Any]:
    return {
        **_GATEWAY,
        "SubscriptionId": sub.sid,
        "SubscriptionName": sub.name,
        "ProductName": "openai-product",
        "UserName": sub.user,
        "UserEmail": sub.email,
        "ApiName": "Azure OpenAI",
        "OperationId": operation_id,
    }


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def _v2(
    rng: random.Random,
    when: datetime,
    sub: Subscription,
    deployment: str,
    model: str,
    operation: str,
) -> dict[str, Any]:
    streaming = operation in {"chat", "responses"} and rng.random() < 0.4
    prompt = rng.randint(20, 3000)
    completion = 0 if operation == "embeddings" else rng.randint(5, 1200)
    cached = (prompt // 128) * 128 if prompt >= 1024 and rng.random() < 0.3 else 0
    reasoning = rng.randint(0, completion) if model.startswith(("gpt-5", "o")) else 0
    path = {"chat": "chat/completions", "embeddings": "embeddings", "responses": "responses"}[
        operation
    ]
    op_ids = {
        "chat": "ChatCompletions_Create",
        "embeddings": "embeddings_create",
        "responses": "createResponse",
    }
    return {
        "EventVersion": 2,
        "RequestId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "ExecTimeUTC": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        **_caller(sub, op_ids[operation]),
        "Operation": operation,
        "DeploymentName": deployment,
        "ApiVersion": "2024-10-21" if operation != "responses" else "2025-04-01-preview",
        "IsStreaming": streaming,
        "StatusCode": 200,
        "Model": model,
        "Usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": cached,
            "reasoning_tokens": reasoning,
        },
        "Request": None,
        "ResponseString": None,
        "_path": path,
    }


def _arrivals(rng: random.Random, n: int, start: datetime, days: int) -> Iterator[datetime]:
    """Increasing call times: ``n`` Poisson arrivals spread over ``days`` (millisecond steps)."""
    mean_gap = days * 86400 / max(n, 1)
    offset = 0.0
    while True:
        offset += rng.expovariate(1 / mean_gap)
        yield start + timedelta(milliseconds=round(offset * 1000))


def v2_reported_events(
    n: int, *, seed: int = 7, start: datetime = datetime(2026, 11, 1), days: int = 25
) -> Iterator[dict[str, Any]]:
    """``n`` v2 events with reported usage over ``days`` from ``start``, in time order (as logged)."""
    rng = random.Random(seed)
    weights = [d[3] for d in _DEPLOYMENTS]
    clock = _arrivals(rng, n, start, days)
    for _ in range(n):
        deployment, model, operation, _w = rng.choices(_DEPLOYMENTS, weights)[0]
        when = next(clock)
        event = _v2(rng, when, rng.choice(SUBSCRIPTIONS), deployment, model, operation)
        event.pop("_path")
        yield event


def _chat_request(rng: random.Random, stream: bool, model: str | None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "messages": [
            {
                "role": "system",
                "content": "You are an AI assistant that helps people find information.",
            },
            {"role": "user", "content": _sentence(rng, rng.randint(8, 60))},
        ],
        "max_tokens": 800,
        "temperature": 0.7,
        "stream": stream,
    }
    if model:
        req["model"] = model
    return req


def v1_stream_events(
    n: int, *, seed: int = 11, start: datetime = datetime(2026, 11, 1), days: int = 25
) -> Iterator[dict[str, Any]]:
    """``n`` v1 streamed chat events with captured (JSON-escaped) content: usage must be estimated."""
    rng = random.Random(seed)
    clock = _arrivals(rng, n, start, days)
    for i in range(n):
        sub = rng.choice(SUBSCRIPTIONS)
        when = next(clock)
        answer = _sentence(rng, rng.randint(10, 120)) + ' "Quoted" line\nnext line'
        escaped = json.dumps(answer, ensure_ascii=False)[1:-1]  # as the policy's regex captured it
        yield {
            "ExecTimeUTC": when.strftime("%Y-%m-%d %H:%M:%S"),
            **_caller(sub, "ChatCompletions_Create"),
            "Request": _chat_request(rng, True, None if i % 3 else "gpt-4o"),
            "ResponseString": escaped,
        }


def _v1_nonstream(rng: random.Random, when: datetime, sub: Subscription) -> dict[str, Any]:
    req = _chat_request(rng, False, None)
    prompt, completion = rng.randint(30, 400), rng.randint(20, 500)
    body = {
        "id": f"chatcmpl-{rng.getrandbits(64):x}",
        "object": "chat.completion",
        "created": int(when.timestamp()),
        "model": "gpt-35-turbo",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": _sentence(rng, 20)},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return {
        "ExecTimeUTC": when.strftime("%Y-%m-%d %H:%M:%S"),
        **_caller(sub, "ChatCompletions_Create"),
        "Request": req,
        "ResponseString": json.dumps(body),
    }


_V1_OPERATION_IDS: Final = {"chat": "ChatCompletions_Create", "embeddings": "embeddings_create"}


def v1_from_v2(event: dict[str, Any]) -> dict[str, Any]:
    """The same call as the original policy logged it (non-streamed: the body in ResponseString).

    Responses API calls had no operation of their own in the original API import; they are
    rendered as chat calls so that every call is ingestible by both pipelines.
    """
    usage = event["Usage"] or {}
    operation = event["Operation"]
    body: dict[str, Any] = {
        "model": event["Model"],
        "usage": {
            k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    if operation == "embeddings":
        body.update(
            object="list", data=[{"object": "embedding", "index": 0, "embedding": [0.0] * 8}]
        )
        body["usage"].pop("completion_tokens")
        request: dict[str, Any] = {"input": "text to embed"}
    else:
        body.update(
            id="chatcmpl-" + event["RequestId"].replace("-", "")[:24],
            object="chat.completion",
            choices=[
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
        )
        request = {"messages": [{"role": "user", "content": "hello"}], "stream": False}
    when = datetime.fromisoformat(event["ExecTimeUTC"].rstrip("Z"))
    return {
        "ExecTimeUTC": when.strftime("%Y-%m-%d %H:%M:%S"),
        **{k: event[k] for k in _CALLER_FIELDS if k != "OperationId"},
        "OperationId": _V1_OPERATION_IDS.get(operation, "ChatCompletions_Create"),
        "Request": request,
        "ResponseString": json.dumps(body),
    }


def _v1_embeddings(rng: random.Random, when: datetime, sub: Subscription) -> dict[str, Any]:
    """An embeddings call as the original policy logged it: the whole response body, whose
    vector the ``openai`` SDK asks for as base64 (``encoding_format``), 1,536 float32s."""
    text = _sentence(rng, rng.randint(5, 80))
    prompt = max(1, len(text) // 4)
    vector = base64.b64encode(rng.randbytes(1536 * 4)).decode()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "text-embedding-ada-002",
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return {
        "ExecTimeUTC": when.strftime("%Y-%m-%d %H:%M:%S"),
        **_caller(sub, "embeddings_create"),
        "Request": {"input": text, "encoding_format": "base64"},
        "ResponseString": json.dumps(body),
    }


def v1_real_mix(
    n: int, *, seed: int = 13, start: datetime = datetime(2026, 11, 1), days: int = 25
) -> Iterator[dict[str, Any]]:
    """``n`` v1 events in the mix of the original project's history, in time order: 70 %
    non-streamed chat (the body in ``ResponseString``), 20 % captured streams (usage to
    estimate) and 10 % embeddings (the body with its base64 vector)."""
    rng = random.Random(seed)
    clock = _arrivals(rng, n, start, days)
    streams = v1_stream_events(n, seed=seed + 1, start=start, days=days)
    for _ in range(n):
        when, draw, sub = next(clock), rng.random(), rng.choice(SUBSCRIPTIONS)
        if draw < 0.7:
            yield _v1_nonstream(rng, when, sub)
        elif draw < 0.9:
            yield {**next(streams), "ExecTimeUTC": when.strftime("%Y-%m-%d %H:%M:%S")}
        else:
            yield _v1_embeddings(rng, when, sub)


def demo_events(*, seed: int = 2026) -> list[str]:
    """The bundled demo sample, as JSONL lines: a realistic month with every kind of event.

    Includes v2 reported usage, v2 pass-through streams (prompt-only), v1 non-streamed calls of
    a model without a default rate (unpriced), v1 captured streams (estimated), failed calls
    (unbilled), one redelivered event and one event truncated at the 200 KB logger limit.
    """
    rng = random.Random(seed + 1)  # not ``seed``: v2_reported_events draws from that sequence
    lines = [json.dumps(e, separators=(",", ":")) for e in v2_reported_events(240, seed=seed)]
    start, span = datetime(2026, 11, 1), 25 * 86400
    for _ in range(25):  # pass-through streams: usage not reported, request kept for the estimate
        sub = rng.choice(SUBSCRIPTIONS)
        when = start + timedelta(seconds=rng.uniform(0, span))
        ev = _v2(rng, when, sub, "gpt-4o", "gpt-4o-2024-11-20", "chat")
        ev.pop("_path")
        ev.update(IsStreaming=True, Usage=None, Model=None, Request=_chat_request(rng, True, None))
        lines.append(json.dumps(ev, separators=(",", ":")))
    for _ in range(6):  # throttled calls: logged with their status, never billed
        ev = _v2(
            rng,
            start + timedelta(seconds=rng.uniform(0, span)),
            rng.choice(SUBSCRIPTIONS),
            "gpt-4o",
            "gpt-4o-2024-11-20",
            "chat",
        )
        ev.pop("_path")
        ev.update(StatusCode=429, Usage=None, Model=None)
        lines.append(json.dumps(ev, separators=(",", ":")))
    for _ in range(20):
        lines.append(
            json.dumps(
                _v1_nonstream(
                    rng, start + timedelta(seconds=rng.uniform(0, span)), rng.choice(SUBSCRIPTIONS)
                )
            )
        )
    lines.extend(json.dumps(e, ensure_ascii=False) for e in v1_stream_events(20, seed=seed + 2))
    rng.shuffle(lines)
    lines.insert(len(lines) // 2, lines[3])  # a redelivered event
    huge = json.loads(lines[0])
    huge["Request"] = {"messages": [{"role": "user", "content": "x" * 210_000}]}
    lines.append(json.dumps(huge)[: 200 * 1024])  # cut by log-to-eventhub at 200 KB
    return lines
