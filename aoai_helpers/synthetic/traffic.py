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

from aoai_helpers.local.stack import StackInfo
from aoai_helpers.spec import Spec

__all__ = [
    "CALL_KINDS",
    "PROMPTS",
    "CallResult",
    "azure_client",
    "chat_and_embedding_deployments",
    "drive_traffic",
    "make_call",
    "v1_client",
]

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


def _url(gateway: StackInfo | str) -> str:
    return gateway if isinstance(gateway, str) else gateway.gateway_url


def azure_client(
    gateway: StackInfo | str, key: str, api_version: str = DEFAULT_API_VERSION
) -> openai.AzureOpenAI:
    """The classic-path client a BU uses: its subscription key as ``api-key``."""
    return openai.AzureOpenAI(
        azure_endpoint=_url(gateway), api_key=key, api_version=api_version, max_retries=0
    )


def v1_client(gateway: StackInfo | str, key: str) -> openai.OpenAI:
    """The v1-API client a BU uses through APIM (key in the ``api-key`` header)."""
    return openai.OpenAI(
        base_url=f"{_url(gateway)}/openai/v1/",
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


#: The kinds of call a BU makes; :func:`drive_traffic` makes each once per round.
CALL_KINDS: Final[tuple[str, ...]] = (
    "chat",
    "chat_stream_usage",
    "chat_stream",
    "completions",
    "embeddings",
    "responses",
    "responses_stream",
)


def make_call(
    kind: str,
    az: openai.AzureOpenAI,
    v1: openai.OpenAI,
    rng: random.Random,
    deployment: str,
    embed: str,
    *,
    rich: bool = False,
) -> tuple[str, str, bool, int, dict[str, int] | None, float | None, float]:
    """Make one call of ``kind`` (one of :data:`CALL_KINDS`); return what the client saw.

    ``rich``: business-sized calls — a pasted document of a few hundred to a few thousand
    tokens in the prompt and a reply limit of 64 to 480 tokens — instead of one-line prompts.
    An API error (429, 400 content filter, 5xx…) is returned with its status, not raised:
    traffic goes on, as a BU's would, and the gateway still logs the call.
    """
    stream = kind.endswith("_stream") or kind == "chat_stream_usage"
    operation = kind.split("_")[0]
    target = embed if operation == "embeddings" else deployment
    first: list[float] = []
    with _timed() as t:
        try:
            usage = _CALLS[kind](az, v1, _Sizes(rng, rich), target, first)
            status = 200
        except openai.APIStatusError as exc:
            usage, status = None, exc.status_code
    ttft = (first[0] - t[0]) if first else None
    return operation, target, stream, status, usage, ttft, t[1] - t[0]


_PARAGRAPHS: Final[tuple[str, ...]] = (
    "Travel and subsistence spending rose eleven percent against the same quarter last year, "
    "driven mostly by customer visits in the northern region and two offsite workshops.",
    "The supplier agreement renews automatically for twelve months unless either party gives "
    "ninety days' written notice; price increases are capped at the consumer price index.",
    "Customer satisfaction scores for the mobile app improved after the October release, but "
    "complaints about login failures doubled among users of older Android devices.",
    "Headcount in the shared services centre is flat; overtime fell by a third after the "
    "invoice-matching automation went live in September.",
    "The campaign reached 1.2 million people across three channels; cost per acquisition was "
    "lowest on email and highest on paid social, where frequency capping was not applied.",
    "Under the new policy employees may work remotely up to three days a week, subject to "
    "their manager's approval and the team's core collaboration hours.",
)


class _Sizes:
    """The seeded RNG of a call, and how big its prompt and reply limit are."""

    def __init__(self, rng: random.Random, rich: bool) -> None:
        self.rng, self.rich = rng, rich

    def prompt(self) -> str:
        question = self.rng.choice(PROMPTS)
        if not self.rich:
            return question
        pasted = " ".join(self.rng.choice(_PARAGRAPHS) for _ in range(self.rng.randint(3, 40)))
        return f"{question}\n\nDocument:\n{pasted}"

    def limit(self, small: int) -> int:
        return self.rng.randint(64, 480) if self.rich else small


def _messages(sizes: _Sizes) -> Any:
    return [
        {"role": "system", "content": "You are a helpful assistant for a large company."},
        {"role": "user", "content": sizes.prompt()},
    ]


def _chat(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
    limit = sizes.limit(sizes.rng.randint(16, 48))
    return _usage(az.chat.completions.create(model=d, messages=_messages(sizes), max_tokens=limit))


def _chat_stream(include_usage: bool) -> Callable[..., Any]:
    def call(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
        options: Any = {"include_usage": True} if include_usage else openai.omit
        limit: Any = sizes.limit(0) if sizes.rich else openai.omit
        events = az.chat.completions.create(
            model=d,
            messages=_messages(sizes),
            stream=True,
            stream_options=options,
            max_tokens=limit,
        )
        return _stream(events, first)

    return call


def _completions(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
    done = az.completions.create(model=d, prompt=sizes.prompt(), max_tokens=sizes.limit(24))
    return _usage(done)


def _embeddings(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
    return _usage(az.embeddings.create(model=d, input=[sizes.prompt(), sizes.prompt()]))


def _responses(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
    done = v1.responses.create(model=d, input=sizes.prompt(), max_output_tokens=sizes.limit(32))
    return _usage(done)


def _responses_stream(az: Any, v1: Any, sizes: _Sizes, d: str, first: list[float]) -> Any:
    limit: Any = sizes.limit(0) if sizes.rich else openai.omit
    events = v1.responses.create(
        model=d, input=sizes.prompt(), stream=True, max_output_tokens=limit
    )
    return _stream(events, first)


_CALLS: Final[dict[str, Callable[..., Any]]] = {
    "chat": _chat,
    "chat_stream_usage": _chat_stream(True),
    "chat_stream": _chat_stream(False),
    "completions": _completions,
    "embeddings": _embeddings,
    "responses": _responses,
    "responses_stream": _responses_stream,
}


def chat_and_embedding_deployments(spec: Spec) -> tuple[list[str], str]:
    """The spec's chat deployments and one embedding deployment (for the calls above)."""
    models = spec.deployment_models()
    chat = [d for d, m in models.items() if "embedding" not in m] or list(models)
    embed = next((d for d, m in models.items() if "embedding" in m), chat[0])
    return chat, embed


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
    chat, embed = chat_and_embedding_deployments(spec)
    results: list[CallResult] = []
    for _ in range(rounds):
        for sub in spec.subscriptions:
            key = info.keys[sub.id]
            az, v1 = azure_client(info, key, api_version), v1_client(info, key)
            try:
                deployment = rng.choice(chat)
                for kind in CALL_KINDS:
                    result = CallResult(sub.id, *make_call(kind, az, v1, rng, deployment, embed))
                    results.append(result)
                    if on_call:
                        on_call(result)
            finally:
                az.close()
                v1.close()
    return results
