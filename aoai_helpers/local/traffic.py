"""Realistic mixed traffic through a gateway with the real ``openai`` SDK (demo, tests, notebooks).

Each business unit (one APIM subscription key each) makes, per round: a chat completion, a
streamed chat (with and without ``stream_options.include_usage``), a legacy completion, an
embedding, and a Responses API call (streamed and not) on the v1 API. Clients are built the way
a BU's engineers build them against APIM: ``AzureOpenAI(azure_endpoint=<gateway>,
api_key=<subscription key>)`` for the classic paths, and ``OpenAI(base_url=<gateway>/openai/v1/,
default_headers={"api-key": <subscription key>})`` for the v1 API (APIM reads the key from the
``api-key`` header, not from ``Authorization``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import openai

from ..spec import Spec
from .stack import StackInfo

__all__ = ["PROMPTS", "CallResult", "azure_client", "drive_traffic", "v1_client"]

DEFAULT_API_VERSION: Final = "2024-10-21"
PROMPTS: Final[tuple[str, ...]] = (
    "Summarise last quarter's travel expenses by department.",
    "Draft a short product announcement for our new savings account.",
    "List three risks in the attached supplier contract.",
    "Translate the onboarding checklist into French.",
    "Explain the difference between accrual and cash accounting.",
    "Suggest five subject lines for the autumn campaign newsletter.",
    "Write a SQL query that returns monthly revenue per region.",
    "What are the key points of the new remote-work policy?",
)


@dataclass(frozen=True, slots=True)
class CallResult:
    """One call as the client saw it (usage is what the API returned to the client, if any)."""

    subscription: str
    operation: str
    deployment: str
    stream: bool
    status: int
    usage: dict[str, int] | None
    ttft_s: float | None
    total_s: float


def azure_client(
    info: StackInfo, key: str, api_version: str = DEFAULT_API_VERSION
) -> openai.AzureOpenAI:
    """The classic-path client a BU uses: its subscription key as ``api-key``."""
    return openai.AzureOpenAI(
        azure_endpoint=info.gateway_url, api_key=key, api_version=api_version, max_retries=0
    )


def v1_client(info: StackInfo, key: str) -> openai.OpenAI:
    """The v1-API client a BU uses through APIM (key in the ``api-key`` header)."""
    return openai.OpenAI(
        base_url=f"{info.gateway_url}/openai/v1/",
        api_key=key,
        default_headers={"api-key": key},
        max_retries=0,
    )


def _usage(obj: Any) -> dict[str, int] | None:
    usage = getattr(obj, "usage", None)
    if usage is None:
        return None
    data: dict[str, Any] = usage.model_dump()
    prompt = data.get("prompt_tokens", data.get("input_tokens"))
    completion = data.get("completion_tokens", data.get("output_tokens")) or 0
    return {
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion),
        "total_tokens": int(data["total_tokens"]),
    }


@contextmanager
def _timed() -> Iterator[list[float]]:
    marks = [time.perf_counter()]
    yield marks
    marks.append(time.perf_counter())


def _stream(events: Any, first: list[float]) -> dict[str, int] | None:
    """Consume a stream; record the time of the first content; return the reported usage."""
    usage = None
    for event in events:
        if not first and _has_content(event):
            first.append(time.perf_counter())
        found = (
            _usage(getattr(event, "response", None))
            if getattr(event, "type", "") == "response.completed"
            else _usage(event)
        )
        usage = found or usage
    return usage


def _has_content(event: Any) -> bool:
    if getattr(event, "type", None) == "response.output_text.delta":
        return True
    for choice in getattr(event, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        if (delta is not None and delta.content) or getattr(choice, "text", None):
            return True
    return False


def drive_traffic(
    info: StackInfo,
    spec: Spec,
    *,
    rounds: int = 1,
    seed: int = 7,
    api_version: str = DEFAULT_API_VERSION,
    on_call: Callable[[CallResult], None] | None = None,
) -> list[CallResult]:
    """Make ``rounds`` rounds of the mixed calls for every subscription; return what clients saw."""
    rng = random.Random(seed)
    models = spec.deployment_models()
    chat = [d for d, m in models.items() if "embedding" not in m] or list(models)
    embed = next((d for d, m in models.items() if "embedding" in m), chat[0])
    results: list[CallResult] = []
    for _ in range(rounds):
        for sub in spec.subscriptions:
            key = info.keys[sub.id]
            az, v1 = azure_client(info, key, api_version), v1_client(info, key)
            try:
                for call in _round(az, v1, rng, chat, embed):
                    result = CallResult(sub.id, *call)
                    results.append(result)
                    if on_call:
                        on_call(result)
            finally:
                az.close()
                v1.close()
    return results


def _round(
    az: openai.AzureOpenAI, v1: openai.OpenAI, rng: random.Random, chat: list[str], embed: str
) -> Iterator[tuple[str, str, bool, int, dict[str, int] | None, float | None, float]]:
    deployment = rng.choice(chat)
    messages: Any = [
        {"role": "system", "content": "You are a helpful assistant for a large company."},
        {"role": "user", "content": rng.choice(PROMPTS)},
    ]
    with _timed() as t:
        done = az.chat.completions.create(
            model=deployment, messages=messages, max_tokens=rng.randint(16, 48)
        )
    yield "chat", deployment, False, 200, _usage(done), None, t[1] - t[0]
    for include in (True, False):
        first: list[float] = []
        with _timed() as t:
            options: Any = {"include_usage": True} if include else openai.omit
            usage = _stream(
                az.chat.completions.create(
                    model=deployment, messages=messages, stream=True, stream_options=options
                ),
                first,
            )
        yield (
            "chat",
            deployment,
            True,
            200,
            usage,
            (first[0] - t[0]) if first else None,
            t[1] - t[0],
        )
    with _timed() as t:
        text = az.completions.create(model=deployment, prompt=rng.choice(PROMPTS), max_tokens=24)
    yield "completions", deployment, False, 200, _usage(text), None, t[1] - t[0]
    with _timed() as t:
        vectors = az.embeddings.create(
            model=embed, input=[rng.choice(PROMPTS), rng.choice(PROMPTS)]
        )
    yield "embeddings", embed, False, 200, _usage(vectors), None, t[1] - t[0]
    with _timed() as t:
        response = v1.responses.create(
            model=deployment, input=rng.choice(PROMPTS), max_output_tokens=32
        )
    yield "responses", deployment, False, 200, _usage(response), None, t[1] - t[0]
    first = []
    with _timed() as t:
        usage = _stream(
            v1.responses.create(model=deployment, input=rng.choice(PROMPTS), stream=True), first
        )
    yield (
        "responses",
        deployment,
        True,
        200,
        usage,
        (first[0] - t[0]) if first else None,
        t[1] - t[0],
    )
