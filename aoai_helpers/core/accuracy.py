"""How close the offline estimates come to the usage the API reported, per request shape.

Input is a list of *pairs*: a real request and the response the API sent for it, with the usage
it reported (``tests/data/captures/pairs.jsonl``, rebuilt from other projects' recorded
cassettes by ``tests/data/captures/rebuild.py``; never from this project's simulator). For
each pair the usage is taken away and estimated as ingestion would estimate it
(:func:`~aoai_helpers.core.tokens.count_prompt` on the request, the visible output counted from
the recorded body or stream), then compared with what the API said.

Shapes (:func:`shape_of`): ``text chat`` (string contents only), ``chat with tools`` (tool /
function definitions, tool calls or tool results), ``chat with response_format`` (a JSON
schema), ``chat with parts`` (content lists: images, audio, files — outside the accuracy goal),
``responses`` (``responses with parts`` when they hold images or files), ``completions`` and
``embeddings``; a prompt whose count is a floor (opaque input: built-in tools, stored
conversations, encrypted items) is ``opaque input (lower bound)`` whatever its shape.

A completion is compared on what can be seen: the reported completion tokens less the reasoning
tokens, as ``non-streamed bodies`` or ``streams``; outputs billed but not seen are a shape of
their own (``hidden output (lower bound)``): reasoning models' (hidden tokens beyond what the
reasoning count reports), content-filtered choices and built-in tools' calls (web search …);
output decoded under a constraint (a strict JSON schema, chat's ``tool_choice: "required"``)
is ``constrained output (lower bound)``. Pure: no I/O.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aoai_helpers.core.decoding import constrained_output
from aoai_helpers.core.sse import json_object
from aoai_helpers.core.tokens import (
    APPROXIMATE,
    LOWER_BOUND,
    count_completion,
    count_prompt,
    encoding_for_model,
)
from aoai_helpers.core.usage import outputs_from_body, summarize_stream

__all__ = ["SHAPES", "Check", "ShapeScore", "completion_check", "prompt_check", "score", "shape_of"]

SHAPES: Final = (
    "text chat",
    "chat with tools",
    "chat with response_format",
    "chat with parts",
    "responses",
    "responses with parts",
    "completions",
    "embeddings",
    "opaque input (lower bound)",
    "constrained output (lower bound)",
    "hidden output (lower bound)",
    "non-streamed bodies",
    "streams",
)
_PART_TYPES: Final = frozenset({"input_image", "input_file", "input_audio", "image_url", "file"})


@dataclass(frozen=True, slots=True)
class Check:
    """One estimate beside the reported figure."""

    pair_id: str
    shape: str
    estimated: int
    reported: int
    quality: str

    @property
    def exact(self) -> bool:
        return self.estimated == self.reported

    @property
    def error(self) -> float:
        """Absolute error as a share of the reported figure (0 when both are 0)."""
        if self.reported == 0:
            return 0.0 if self.estimated == 0 else 1.0
        return abs(self.estimated - self.reported) / self.reported


@dataclass(frozen=True, slots=True)
class ShapeScore:
    """The checks of one shape, summed up."""

    shape: str
    count: int
    exact: int
    mean_abs_error: float
    claimed_exact: int
    claimed_exact_wrong: int
    above_reported: int


def _chat_shape(request: Mapping[str, Any]) -> str:
    messages = request.get("messages")
    messages = messages if isinstance(messages, list) else []
    if any(isinstance(m, Mapping) and isinstance(m.get("content"), list) for m in messages):
        return "chat with parts"
    tooled = bool(request.get("tools") or request.get("functions")) or any(
        isinstance(m, Mapping)
        and (m.get("tool_calls") or m.get("function_call") or m.get("role") in ("tool", "function"))
        for m in messages
    )
    if tooled:
        return "chat with tools"
    fmt = request.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object"):
        return "chat with response_format"
    return "text chat"


def _has_parts(value: Any) -> bool:
    """Whether request input holds image / file / audio parts (outside the accuracy goal)."""
    if isinstance(value, Mapping):
        return value.get("type") in _PART_TYPES or any(_has_parts(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_parts(v) for v in value)
    return False


def shape_of(pair: Mapping[str, Any]) -> str:
    """The shape of a pair's request (one of :data:`SHAPES` but the lower-bound one)."""
    operation = pair.get("operation")
    request = pair.get("request")
    if operation == "chat" and isinstance(request, Mapping):
        return _chat_shape(request)
    if (
        operation == "responses"
        and isinstance(request, Mapping)
        and _has_parts(request.get("input"))
    ):
        return "responses with parts"
    return str(operation)


def _model(pair: Mapping[str, Any]) -> str | None:
    model = pair.get("response_model")
    if isinstance(model, str) and model:
        return model
    request = pair.get("request")
    name = request.get("model") if isinstance(request, Mapping) else None
    return name if isinstance(name, str) else None


_CREATED: Final = re.compile(r'"created(?:_at)?"\s*:\s*(\d{9,11})')


def _when(pair: Mapping[str, Any]) -> datetime | None:
    """When the API answered: the response's ``created`` / ``created_at`` (its first one)."""
    body = pair.get("response_body")
    found = _CREATED.search(body) if isinstance(body, str) else None
    return datetime.fromtimestamp(int(found.group(1)), UTC) if found else None


def prompt_check(pair: Mapping[str, Any]) -> Check | None:
    """The prompt estimate of a pair beside the reported prompt tokens (``None``: none reported)."""
    usage = pair.get("usage") or {}
    reported = usage.get("prompt_tokens")
    request = pair.get("request")
    if not isinstance(reported, int) or not isinstance(request, Mapping):
        return None
    count = count_prompt(str(pair.get("operation")), request, _model(pair), _when(pair))
    shape = "opaque input (lower bound)" if count.quality == LOWER_BOUND else shape_of(pair)
    return Check(str(pair.get("id")), shape, count.tokens, reported, count.quality)


def _outputs(pair: Mapping[str, Any]) -> tuple[list[str], list[int], bool] | None:
    body = pair.get("response_body")
    if not isinstance(body, str):
        return None
    if pair.get("stream"):
        summary = summarize_stream(body)
        return summary.texts, summary.tool_calls, summary.hidden_output
    parsed = json_object(body.strip())
    return outputs_from_body(parsed) if parsed is not None else None


def completion_check(pair: Mapping[str, Any]) -> Check | None:
    """The visible-output estimate beside the reported completion less reasoning tokens."""
    usage = pair.get("usage") or {}
    completion = usage.get("completion_tokens")
    if pair.get("operation") == "embeddings" or not isinstance(completion, int):
        return None
    outputs = _outputs(pair)
    if outputs is None:
        return None
    texts, calls, hidden = outputs
    visible = completion - int(usage.get("reasoning_tokens") or 0)
    request = pair.get("request")
    request = request if isinstance(request, Mapping) else None
    operation = str(pair.get("operation"))
    _, info = encoding_for_model(_model(pair))
    estimated = count_completion(operation, request, _model(pair), texts, calls)
    if info.reasoning or hidden:  # hidden reasoning / filtered / built-in tool output
        shape, quality = "hidden output (lower bound)", LOWER_BOUND
    elif constrained_output(operation, request):  # decoded under a grammar
        shape, quality = "constrained output (lower bound)", LOWER_BOUND
    else:
        shape = "streams" if pair.get("stream") else "non-streamed bodies"
        quality = APPROXIMATE
    return Check(str(pair.get("id")), shape, estimated, visible, quality)


def score(checks: Iterable[Check]) -> list[ShapeScore]:
    """Per shape: how many, how many exact, the mean absolute error, the exactness claims and
    how many estimates came out above the reported figure (for a lower bound: a broken floor)."""
    by_shape: dict[str, list[Check]] = {}
    for check in checks:
        by_shape.setdefault(check.shape, []).append(check)
    order = {shape: i for i, shape in enumerate(SHAPES)}
    scores = []
    for shape in sorted(by_shape, key=lambda s: (order.get(s, len(order)), s)):
        group = by_shape[shape]
        claimed = [c for c in group if c.quality == "exact"]
        scores.append(
            ShapeScore(
                shape,
                len(group),
                sum(c.exact for c in group),
                statistics.fmean(c.error for c in group),
                len(claimed),
                sum(not c.exact for c in claimed),
                sum(c.estimated > c.reported for c in group),
            )
        )
    return scores
