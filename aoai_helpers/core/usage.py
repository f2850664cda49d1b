"""Usage extraction and resolution: what one call consumed, and how we know it.

Three layers, all pure:

- :func:`usage_from_body` normalises the ``usage`` object of every AOAI response shape
  (chat, legacy completions, embeddings, Responses API, and the ``response.completed``
  payload) into :class:`~aoai_helpers.core.events.Usage`;
- :func:`summarize_stream` reads a captured streamed body (chat / completions chunks or
  Responses API named events): the usage chunk when there is one, the model, and the
  output text reassembled per choice;
- :func:`resolve_usage` applies the resolution order of docs/architecture.md to one
  :class:`~aoai_helpers.core.events.UsageEvent` and says where the numbers came from::

      non-2xx status, no reported usage  -> "unbilled"     (zeros: the backend served nothing)
      usage reported (event / body / usage chunk / response.completed) -> "reported"
      response captured, no usage        -> "estimated"    (prompt + reassembled output counted)
      nothing of the response            -> "prompt_only"  (prompt counted, completion 0)

Counting uses :mod:`aoai_helpers.core.tokens`, imported lazily: a v2 event with reported usage
never touches the tokenizer or parses anything. Nothing here raises on a malformed event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aoai_helpers.core.events import Usage, UsageEvent
from aoai_helpers.core.sse import json_object, parse_stream, unescape_json_fragment
from aoai_helpers.core.tool_schema import render_calls
from aoai_helpers.exceptions import TokenizerError

__all__ = [
    "ResolvedUsage",
    "StreamSummary",
    "UsageSource",
    "outputs_from_body",
    "resolve_usage",
    "summarize_stream",
    "texts_from_body",
    "usage_from_body",
]

UsageSource = Literal["reported", "estimated", "prompt_only", "unbilled", "unmetered"]

_MAX_INT: Final = 2**31 - 1  # the token columns are SQL ``int``
#: Responses API events that end a stream; each carries the final ``response`` (with usage).
_TERMINAL: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})
_SSE_LINE: Final = re.compile(r"^(?:data|event):", re.MULTILINE)
_FRAGMENT_COUNTS: Final = {
    key: re.compile(rf'"{key}"\s*:\s*(\d{{1,10}})(?!\d)')
    for key in ("prompt_tokens", "completion_tokens", "total_tokens")
}
_FRAGMENT_MODEL: Final = re.compile(r'"model"\s*:\s*"([^"\\]*)"')


@dataclass(frozen=True, slots=True)
class ResolvedUsage:
    """The usage billed for one event and where it came from.

    ``model`` is the model used for counting and pricing: the one the response reported
    (body, stream, v2 ``Model``), else the request's ``model``, else the deployment name
    (both translated through the optional ``models`` map of :func:`resolve_usage`).
    ``encoding`` names the encoding used when tokens were counted (``None`` if none were);
    ``model_known`` is ``False`` only when counting fell back to a default encoding because
    the tokenizer did not recognise the model (``True`` for reported usage). ``quality`` says
    how sure an estimate is (``exact`` | ``approximate`` | ``lower_bound``; ``None`` when
    nothing was estimated): a ``prompt_only`` row, opaque input and the visible output of a
    reasoning model (its hidden reasoning is billed but not seen) are lower bounds.
    """

    usage: Usage
    source: UsageSource
    model: str | None
    encoding: str | None
    model_known: bool
    quality: str | None = None


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What a captured streamed body says.

    ``texts`` holds the output reassembled per choice, ordered by choice index: content (and
    refusal) text, then the tool calls as the model writes them
    (:func:`~aoai_helpers.core.tool_schema.render_calls`);
    ``tool_calls`` how many calls each choice made; ``hidden_output`` that some output was
    billed but not seen (a ``content_filter`` finish, a built-in tool's call). ``done`` means the stream reached its end marker (``[DONE]``, or a terminal
    Responses event: ``response.completed`` / ``.incomplete`` / ``.failed``); ``truncated``
    means the body ended inside an event. ``finish_reasons`` maps choice index to its
    ``finish_reason`` (Responses API: the final ``status``).
    """

    usage: Usage | None
    model: str | None
    texts: list[str]
    done: bool
    chunks: int
    bad_lines: int
    finish_reasons: dict[int, str]
    truncated: bool = False
    tool_calls: list[int] = field(default_factory=list)
    hidden_output: bool = False


class _Bad(Exception):
    """Internal: a token count that is not a non-negative SQL int."""


def _tok(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise _Bad
    return value


def _detail(details: Any, key: str) -> int:
    return _tok(details.get(key)) if isinstance(details, dict) else 0


def usage_from_body(body: Any) -> Usage | None:
    """The usage of a response body (or of a ``response.completed`` payload), or ``None``.

    Chat / completions: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``;
    embeddings: ``prompt_tokens``, ``total_tokens``; Responses API: ``input_tokens``,
    ``output_tokens``, their ``*_details`` and ``total_tokens``, possibly under ``response``.
    Null or missing details count 0; a negative or non-integer count makes the whole usage
    untrustworthy, so the answer is ``None``.
    """
    if not isinstance(body, dict):
        return None
    u = body.get("usage")
    if not isinstance(u, dict):
        inner = body.get("response")
        u = inner.get("usage") if isinstance(inner, dict) else None
        if not isinstance(u, dict):
            return None
    try:
        if "input_tokens" in u or "output_tokens" in u:
            prompt, completion = _tok(u.get("input_tokens")), _tok(u.get("output_tokens"))
            cached = _detail(u.get("input_tokens_details"), "cached_tokens")
            reasoning = _detail(u.get("output_tokens_details"), "reasoning_tokens")
        elif "prompt_tokens" in u or "completion_tokens" in u or "total_tokens" in u:
            prompt, completion = _tok(u.get("prompt_tokens")), _tok(u.get("completion_tokens"))
            cached = _detail(u.get("prompt_tokens_details"), "cached_tokens")
            reasoning = _detail(u.get("completion_tokens_details"), "reasoning_tokens")
        else:
            return None
        total = _tok(u.get("total_tokens")) or _tok(prompt + completion)
    except _Bad:
        return None
    return Usage(prompt, completion, total, cached, reasoning)


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _index(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(slots=True)
class _Choice:
    """Output of one choice as it is reassembled."""

    content: list[str] = field(default_factory=list)
    tools: dict[int, tuple[list[str], list[str]]] = field(default_factory=dict)

    def tool(self, key: int) -> tuple[list[str], list[str]]:
        return self.tools.setdefault(key, ([], []))

    def add_function(self, key: int, fn: Any) -> None:
        if not isinstance(fn, dict):
            return
        name, args = fn.get("name"), fn.get("arguments")
        if isinstance(name, str):
            self.tool(key)[0].append(name)
        if isinstance(args, str):
            self.tool(key)[1].append(args)

    def calls(self) -> int:
        """How many tool (or function) calls the choice made."""
        return len(self.tools)

    def text(self) -> str:
        """Content, then the tool calls as the model writes them
        (:func:`~aoai_helpers.core.tool_schema.render_calls`)."""
        calls = [("".join(n), "".join(a)) for _k, (n, a) in sorted(self.tools.items())]
        return "".join(self.content) + render_calls(calls)


@dataclass(slots=True)
class _Reassembly:
    """Accumulates chunks / events / bodies into usage, model and per-choice output."""

    choices: dict[int, _Choice] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    usage: Usage | None = None
    model: str | None = None
    done: bool = False
    hidden: bool = False  # output billed but not seen: filtered, or a built-in tool's call

    def see_item(self, item: Any) -> None:
        """A Responses output item: a built-in tool's call (web search …) is output unseen."""
        kind = item.get("type") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind.endswith("_call") and kind != "function_call":
            self.hidden = True

    def choice(self, index: int) -> _Choice:
        return self.choices.setdefault(index, _Choice())

    def see_model(self, value: Any) -> None:
        if self.model is None:
            self.model = _nonempty(value)

    def texts(self) -> list[str]:
        return [self.choices[i].text() for i in sorted(self.choices)]

    def calls(self) -> list[int]:
        return [self.choices[i].calls() for i in sorted(self.choices)]

    def chat(self, obj: dict[str, Any]) -> None:
        """A chat / completions chunk, or a non-streamed chat / completions body."""
        self.see_model(obj.get("model"))
        if isinstance(obj.get("usage"), dict):
            self.usage = usage_from_body(obj) or self.usage
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for pos, c in enumerate(choices):
            if not isinstance(c, dict):
                continue
            idx = _index(c.get("index"), pos)
            ch = self.choice(idx)
            reason = _nonempty(c.get("finish_reason"))
            if reason:
                self.finish[idx] = reason
                self.hidden = self.hidden or reason == "content_filter"
            if isinstance(c.get("text"), str):
                ch.content.append(c["text"])  # legacy completions
            delta = c.get("delta", c.get("message"))
            if not isinstance(delta, dict):
                continue  # e.g. Azure's annotation-only chunks
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str):
                    ch.content.append(delta[key])
            calls = delta.get("tool_calls")
            for tpos, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    ch.add_function(_index(call.get("index"), tpos), call.get("function"))
            ch.add_function(-1, delta.get("function_call"))  # the older functions API

    def responses_event(self, kind: str, obj: dict[str, Any]) -> None:
        """One Responses API streaming event (``response.*``)."""
        resp = obj.get("response")
        if isinstance(resp, dict):
            self.see_model(resp.get("model"))
            if kind in _TERMINAL:
                self.done = True
                self.usage = usage_from_body(resp) or self.usage
                if _nonempty(resp.get("status")):
                    self.finish[0] = resp["status"]
        ch, delta = self.choice(0), obj.get("delta")
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            if isinstance(delta, str):
                ch.content.append(delta)
        elif kind == "response.function_call_arguments.delta":
            if isinstance(delta, str):
                ch.tool(_index(obj.get("output_index"), 0))[1].append(delta)
        elif kind == "response.output_item.added":
            item = obj.get("item")
            self.see_item(item)
            if isinstance(item, dict) and item.get("type") == "function_call":
                ch.add_function(_index(obj.get("output_index"), 0), {"name": item.get("name")})

    def responses_output(self, output: list[Any]) -> None:
        """The ``output`` items of a non-streamed Responses API body."""
        ch = self.choice(0)
        for pos, item in enumerate(output):
            if not isinstance(item, dict):
                continue
            self.see_item(item)
            if item.get("type") == "function_call":
                ch.add_function(pos, item)
            parts = item.get("content") if item.get("type") == "message" else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    text = part.get("text", part.get("refusal"))
                    if isinstance(text, str):
                        ch.content.append(text)


def summarize_stream(text: str) -> StreamSummary:
    """Summarise a captured streamed body: usage chunk, model, reassembled output per choice.

    The ``include_usage`` chunk is looked for in the whole stream (its position relative to
    Azure's trailing annotation chunks is not documented); the last valid one wins.
    """
    parsed = parse_stream(text)
    acc = _Reassembly(done=parsed.done)
    for name, obj in parsed.events:
        kind = name or obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            acc.responses_event(kind, obj)
        else:
            acc.chat(obj)
    return StreamSummary(
        usage=acc.usage,
        model=acc.model,
        texts=acc.texts(),
        done=acc.done,
        chunks=len(parsed.events),
        bad_lines=parsed.bad_lines,
        finish_reasons=acc.finish,
        truncated=parsed.truncated,
        tool_calls=acc.calls(),
        hidden_output=acc.hidden,
    )


def texts_from_body(body: dict[str, Any]) -> list[str]:
    """The output of a non-streamed body per choice (chat, completions or Responses API)."""
    return outputs_from_body(body)[0]


def outputs_from_body(body: dict[str, Any]) -> tuple[list[str], list[int], bool]:
    """The output of a non-streamed body per choice, how many tool calls each made, and
    whether some output was billed but not seen (see :class:`StreamSummary`)."""
    acc = _Reassembly()
    inner = body.get("response")
    body = inner if isinstance(inner, dict) and "output" in inner else body
    output = body.get("output")
    if isinstance(output, list):
        acc.responses_output(output)
    else:
        acc.chat(body)
    return acc.texts(), acc.calls(), acc.hidden


def _usage_from_fragment(text: str) -> tuple[Usage, str | None] | None:
    """Counts cut out of a body that is not valid JSON (v1 embeddings fragments)."""
    found = {k: rx.search(text) for k, rx in _FRAGMENT_COUNTS.items()}
    counts = {k: int(m.group(1)) if m else 0 for k, m in found.items()}
    if found["prompt_tokens"] is None or any(v > _MAX_INT for v in counts.values()):
        return None
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    total = counts["total_tokens"] or min(prompt + completion, _MAX_INT)
    model = _FRAGMENT_MODEL.search(text)
    return Usage(prompt, completion, total), _nonempty(model.group(1)) if model else None


def _event_model(
    event: UsageEvent, models: Mapping[str, str] | None, default_model: str | None = None
) -> str | None:
    """Model when the response names none: the event's, else the request's, else the deployment,
    else ``default_model`` (e.g. for v1 events of deployments whose requests name no model).

    ``models`` maps deployment names (lower-case) to models; it translates the request's
    ``model`` (a deployment name on the ``/openai/v1/`` API) and the deployment name. A v1
    event's model is the request's (the original policy logged no other), so it is translated
    too: a v1 stream whose body names a deployment is counted and priced as its model.
    """
    if event.model and event.event_version != 1:
        return event.model
    request = event.request
    name = _nonempty(event.model)
    name = name or (_nonempty(request.get("model")) if isinstance(request, dict) else None)
    name = name or _nonempty(event.deployment_name)
    if name and models:
        return models.get(name.lower(), name)
    return name or default_model


def _body_model(body: dict[str, Any]) -> str | None:
    inner = body.get("response")
    return _nonempty(body.get("model")) or (
        _nonempty(inner.get("model")) if isinstance(inner, dict) else None
    )


def _reported(usage: Usage, model: str | None) -> ResolvedUsage:
    return ResolvedUsage(usage, "reported", model, None, True)


def _estimate(
    event: UsageEvent,
    texts: list[str] | None,
    model: str | None,
    calls: list[int] | None = None,
    hidden: bool = False,
) -> ResolvedUsage:
    """Count the prompt, and the output when ``texts`` is given (``None``: prompt only);
    ``calls`` is how many tool calls each choice made (their framing tokens), ``hidden`` that
    some output was billed unseen (the count is then a lower bound)."""
    from aoai_helpers.core import tokens  # lazy: only events without reported usage need it

    request = event.request if isinstance(event.request, dict) else None
    try:
        count = tokens.count_prompt(event.operation, request, model, event.exec_time)
        prompt, encoding, known = count.tokens, count.encoding, count.model_known
        quality = count.quality
    except TokenizerError:
        raise  # tokenizer data missing: a deployment problem, never a silent zero
    except Exception:  # garbage the tokenizer could not digest: bill what we can
        prompt, encoding, known, quality = 0, None, False, tokens.LOWER_BOUND
    completion = 0
    if texts is not None and event.operation != "embeddings":
        try:
            completion = tokens.count_completion(
                event.operation, request, model, texts, calls or ()
            )
        except TokenizerError:
            raise
        except Exception:
            completion, quality = 0, tokens.LOWER_BOUND
        quality = (
            tokens.LOWER_BOUND
            if hidden
            else tokens.completion_quality(model, quality, event.operation, request)
        )
    elif event.operation != "embeddings":
        quality = tokens.LOWER_BOUND  # the output was not seen: its tokens are not counted
    source: UsageSource = "prompt_only" if texts is None else "estimated"
    usage = Usage(prompt, completion, prompt + completion)
    return ResolvedUsage(usage, source, model, encoding, known, quality)


def _from_response(event: UsageEvent, raw: str, default: str | None) -> ResolvedUsage | None:
    """Resolve from a captured response; ``None`` when it tells nothing usable."""
    streaming, text = event.is_streaming, raw.strip()
    if not text:
        return None
    if text[0] == "{":
        body = json_object(text)
        if body is not None:
            model = _body_model(body) or default
            usage = usage_from_body(body)
            if usage is not None:
                return _reported(usage, model)
            if not streaming:
                texts, calls, hidden = outputs_from_body(body)
                return _estimate(event, texts, model, calls, hidden) if any(texts) else None
        elif not streaming:
            fragment = _usage_from_fragment(text)
            return _reported(fragment[0], fragment[1] or default) if fragment else None
    if _SSE_LINE.search(text):
        summary = summarize_stream(text)
        if summary.chunks or summary.done:
            model = summary.model or default
            if summary.usage is not None:
                return _reported(summary.usage, model)
            return _estimate(event, summary.texts, model, summary.tool_calls, summary.hidden_output)
        if "\n" in text:  # SSE with nothing usable (escaped content is always one line)
            return None
    if streaming:
        return _estimate(event, [unescape_json_fragment(raw)], default)
    return None


def resolve_usage(
    event: UsageEvent, models: Mapping[str, str] | None = None, default_model: str | None = None
) -> ResolvedUsage:
    """Resolve the usage of one event (docs/architecture.md; see the module docstring).

    ``models`` optionally maps deployment names (lower-case) to models, for events whose
    response names no model; ``default_model`` is the model of events that name none at all. Pure and total: never raises for a malformed event (only
    :class:`~aoai_helpers.exceptions.TokenizerError` when the bundled tokenizer is missing).
    """
    default = _event_model(event, models, default_model)
    if event.usage is not None:
        return _reported(event.usage, default)
    status = event.status_code
    if status is not None and not 200 <= status <= 299:
        return ResolvedUsage(Usage(), "unbilled", default, None, True)
    if event.operation == "other" and event.event_version == 2:
        # a served operation the gateway cannot meter in tokens (allowed by the spec): an
        # unpriced call of its BU, never a free one
        return ResolvedUsage(Usage(), "unmetered", default, None, True)
    if isinstance(event.response_string, str):
        resolved = _from_response(event, event.response_string, default)
        if resolved is not None:
            return resolved
    return _estimate(event, None, default)
