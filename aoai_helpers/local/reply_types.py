"""The simulator's reply vocabulary and data: :data:`VOCABULARY` (one token per word), Azure's
content-filter results for safe output, and the :class:`Plan` of one reply with its
:class:`Choice` / :class:`ToolCall` parts and the SSE :class:`Frame`. Pure; imports nothing
of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "CHOICE_FILTER_RESULTS",
    "PROMPT_FILTER_RESULTS",
    "VOCABULARY",
    "Choice",
    "Frame",
    "Plan",
    "Stage",
    "ToolCall",
    "output_text",
]

_WORDS: Final = (
    "the of and to in is it that for on with as was at by from this have not are but be or "
    "one all can more will about time some which their when so what up out there like just "
    "other over new also after into than then only two use first most well these way good "
    "make any very know back"
)


VOCABULARY: Final = tuple(_WORDS.split())


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

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def output_text(content: str, name: str = "", arguments: str = "") -> str:
    """One choice's output as :mod:`aoai_helpers.core.usage` reassembles it (what gets counted)."""
    return "\n".join(p for p in (content, name, arguments) if p)


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
    completion_tokens: int
    capped: bool  # the request's own token limit shortened the reply

    def usage(self) -> dict[str, int]:
        """The usage this call consumes, in the five-key shape of ``SimCall.usage``."""
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        }


@dataclass(frozen=True, slots=True)
class Frame:
    """One SSE event; ``choice``/``field``/``text`` say what output it delivers (for a cut)."""

    data: bytes
    stage: Stage  # pre: before the first token; content: one paced token; gen/post: others
    choice: int = -1
    field: str = ""  # "content" | "name" | "arguments"
    text: str = ""
