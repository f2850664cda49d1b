"""The simulator's reply vocabulary and data: :data:`VOCABULARY` (one token per word), the
words and tool arguments a reply draws from a seeded ``random.Random``, Azure's
content-filter results for safe output and its error wording, the ``usage`` objects, the
:class:`StreamShape` options, and the :class:`Plan` of one reply with its :class:`Choice` /
:class:`ToolCall` parts and the SSE :class:`Frame`. Pure; imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import orjson

__all__ = [
    "CHOICE_FILTER_RESULTS",
    "NOT_DEPLOYED",
    "PROMPT_FILTER_RESULTS",
    "SERVER_ERROR",
    "UNAUTHORIZED",
    "VOCABULARY",
    "Choice",
    "Frame",
    "Plan",
    "Stage",
    "StreamShape",
    "ToolCall",
    "chat_usage",
    "content_filter_error",
    "error_body",
    "fingerprint",
    "item_id",
    "non_negative_int",
    "obfuscation",
    "output_item",
    "rate_limit_error",
    "reply_words",
    "responses_usage",
    "sse_data",
    "tool_arguments",
]

_PAD: Final = string.ascii_letters + string.digits
_WORDS: Final = (
    "the of and to in is it that for on with as was at by from this have not are but be or "
    "one all can more will about time some which their when so what up out there like just "
    "other over new also after into than then only two use first most well these way good "
    "make any very know back"
)


VOCABULARY: Final = tuple(_WORDS.split())


def reply_words(rng: random.Random, count: int) -> tuple[str, ...]:
    """``count`` words of :data:`VOCABULARY`, capitalised first, space-led after."""
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return tuple(w.capitalize() if i == 0 else " " + w for i, w in enumerate(words))


def tool_arguments(function: Mapping[str, Any], rng: random.Random) -> str:
    """JSON arguments with the function's parameter names and values of their types."""
    params = function.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    args: dict[str, Any] = {}
    for key, prop in (props if isinstance(props, Mapping) else {}).items():
        kind = prop.get("type") if isinstance(prop, Mapping) else None
        enum = prop.get("enum") if isinstance(prop, Mapping) else None
        if isinstance(enum, list) and enum:
            args[str(key)] = rng.choice(enum)
        elif kind in ("integer", "number"):
            args[str(key)] = rng.randint(1, 100)
        elif kind == "boolean":
            args[str(key)] = rng.random() < 0.5
        elif kind in ("array", "object"):
            args[str(key)] = [] if kind == "array" else {}
        else:
            args[str(key)] = rng.choice(VOCABULARY)
    return orjson.dumps(args).decode()


def fingerprint(model: str) -> str:
    """A stable ``system_fingerprint`` for ``model``."""
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def obfuscation(raw: bytes) -> str:
    """Padding like OpenAI's ``obfuscation`` field: 1-16 letters and digits from a hash of the
    chunk (deterministic, like the rest of a reply)."""
    digest = hashlib.sha256(raw).digest()
    return "".join(_PAD[b % len(_PAD)] for b in digest[1 : 2 + digest[0] % 16])


_SAFE: Final = {"filtered": False, "severity": "safe"}


_NOT_DETECTED: Final = {"filtered": False, "detected": False}


#: Azure's ``prompt_filter_results`` for a prompt that passed the default content filter.
PROMPT_FILTER_RESULTS: Final = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            "hate": _SAFE,
            "jailbreak": _NOT_DETECTED,
            "self_harm": _SAFE,
            "sexual": _SAFE,
            "violence": _SAFE,
        },
    }
]


#: Azure's per-choice ``content_filter_results`` for output that passed the filter.
CHOICE_FILTER_RESULTS: Final = {
    "hate": _SAFE,
    "protected_material_code": _NOT_DETECTED,
    "protected_material_text": _NOT_DETECTED,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}


Stage = Literal["pre", "gen", "content", "post"]


@dataclass(frozen=True, slots=True)
class StreamShape:
    """Optional shapes of real streams (the defaults are Azure's default content filter).

    ``obfuscation``: an OpenAI-style ``obfuscation`` padding string on every chat /
    completions chunk and every Responses delta event (a request's
    ``stream_options.include_obfuscation`` overrides it). ``filter_offsets``: Azure's
    asynchronous filter: content chunks carry no filter results, and an annotation chunk per
    choice after its finish chunk carries them with ``content_filter_offsets``.
    ``completions_preamble``: ``False`` drops the ``prompt_filter_results`` preamble chunk of
    legacy completions streams (the prompt results then ride on the first choice chunk).
    ``azure_2023``: Azure's 2023 chunks (Microsoft's content-streaming page shows them): keys
    ``id, object, created, model, choices, usage: null``, no ``system_fingerprint``; a choice's
    ``index, finish_reason, delta`` before its ``content_filter_results``; the role chunk's
    delta only ``{"role": "assistant"}``; the prompt's results as ``prompt_annotations``.
    """

    obfuscation: bool = False
    filter_offsets: bool = False
    completions_preamble: bool = True
    azure_2023: bool = False

    def for_request(self, request: Mapping[str, Any]) -> StreamShape:
        """This shape with the request's ``stream_options.include_obfuscation``, if it has one."""
        options = request.get("stream_options")
        wanted = options.get("include_obfuscation") if isinstance(options, Mapping) else None
        return replace(self, obfuscation=wanted) if isinstance(wanted, bool) else self


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A chat / completions ``usage`` object as Azure reports it (2024-10-21 and later)."""
    return {
        "completion_tokens": completion,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": reasoning,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": prompt,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached},
        "total_tokens": prompt + completion,
    }


def responses_usage(
    prompt: int, completion: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    """A Responses API ``usage`` object (``cache_write_tokens`` is not in azure-facts.md; the
    openai SDK's model requires it)."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    pieces: tuple[str, ...]  # the arguments as streamed, one token each


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    pieces: tuple[str, ...]  # the text, one token per piece (empty for a tool call)
    tool: ToolCall | None
    finish_reason: str
    reasoning: int = 0  # hidden reasoning tokens billed for this choice

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the simulator will answer to one request, before latency and faults."""

    operation: str
    deployment: str
    model: str
    request: Mapping[str, Any]
    stream: bool
    include_usage: bool
    response_id: str
    created: int
    prompt_tokens: int
    choices: tuple[Choice, ...]
    completion_tokens: int  # visible output plus hidden reasoning
    capped: bool  # the request's own token limit shortened the reply
    cached_tokens: int = 0  # of the prompt, served from the prompt cache
    shape: StreamShape = StreamShape()

    @property
    def reasoning_tokens(self) -> int:
        """Hidden reasoning tokens of all choices (part of ``completion_tokens``)."""
        return sum(c.reasoning for c in self.choices)

    def usage(self) -> dict[str, int]:
        """The usage this call consumes, in the five-key shape of ``SimCall.usage``."""
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    def chat_usage(self) -> dict[str, Any]:
        """This plan's chat / completions ``usage`` object."""
        return chat_usage(
            self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens
        )

    def responses_usage(self) -> dict[str, Any]:
        """This plan's Responses API ``usage`` object."""
        return responses_usage(
            self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE event; ``choice``/``field``/``text`` say what output it delivers (for a cut)."""

    data: bytes
    stage: Stage  # pre: before the first token; content: one paced token; gen/post: others
    choice: int = -1
    field: str = ""  # "content" | "name" | "arguments"
    text: str = ""


UNAUTHORIZED: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
NOT_DEPLOYED: Final = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)
_FILTERED: Final = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
SERVER_ERROR: Final = (
    "The server had an error while processing your request. Sorry about that! You can retry "
    "your request, or contact us through an Azure support request if the error persists."
)


_OPERATION_IDS: Final = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
    "responses": "Responses_Create",
}


def rate_limit_error(operation: str, api_version: str | None, seconds: int) -> dict[str, Any]:
    """Azure's 429 body for ``operation``, asking to retry after ``seconds``."""
    message = (
        f"Requests to the {_OPERATION_IDS[operation]} Operation under Azure OpenAI "
        f"API version {api_version or 'v1'} have exceeded call rate limit of your "
        f"current OpenAI S0 pricing tier. Please retry after {seconds} second"
        f"{'s' if seconds != 1 else ''}. Please contact Azure support service if you "
        "would like to further increase the default rate limit."
    )
    return error_body("429", message)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An Azure ``{"error": {...}}`` body."""
    return {"error": {"code": code, "message": message, **extra}}


def content_filter_error() -> dict[str, Any]:
    """Azure's 400 body for a prompt the content filter blocked (violence, medium)."""
    result = {
        "hate": _SAFE,
        "jailbreak": _NOT_DETECTED,
        "self_harm": _SAFE,
        "sexual": _SAFE,
        "violence": {"filtered": True, "severity": "medium"},
    }
    inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result}
    return error_body(
        "content_filter", _FILTERED, param="prompt", type=None, status=400, innererror=inner
    )


def non_negative_int(value: Any) -> int | None:
    """``value`` if it is an int of 0 or more (not a bool), else ``None``: request fields."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def sse_data(obj: Any) -> bytes:
    """One server-sent event's ``data:`` line for ``obj`` (and the blank line ending it)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def item_id(plan: Plan) -> str:
    """The id of a Responses plan's one output message."""
    return "msg_" + plan.response_id.removeprefix("resp_")


def output_item(plan: Plan, status: str, text: str | None) -> dict[str, Any]:
    """A Responses output ``message`` item (no content while in progress)."""
    content = [] if text is None else [{"annotations": [], "text": text, "type": "output_text"}]
    return {
        "content": content,
        "id": item_id(plan),
        "role": "assistant",
        "status": status,
        "type": "message",
    }
