"""Pure data for the AOAI simulator: deterministic replies, Azure-shaped bodies and SSE frames.
(The reply's types and vocabulary: :mod:`aoai_helpers.local.reply_types`.)

Nothing here does I/O or keeps state: :func:`make_plan` turns a request into a :class:`Plan`
(the reply text per choice, token counts), and the ``*_body`` / :func:`stream_frames`
functions render a plan as the JSON body or the SSE frames Azure OpenAI would send.
:mod:`aoai_helpers.local.simulator` adds routing, auth, latency and faults.

Reply text is drawn from :data:`VOCABULARY`, words that are one token each (with a leading
space, and capitalised at the start) in both ``o200k_base`` and ``cl100k_base``, so a reply
of *n* words is *n* visible completion tokens and each streamed content chunk is one token.

Completion tokens are counted as the real API counts them (and as the estimator does,
:func:`~aoai_helpers.core.tokens.count_completion`): content, then a tool call as the model
writes it (:func:`~aoai_helpers.core.tool_schema.render_calls`) plus its framing; a text reply
where a call was possible one token more; a forced call its arguments and one token. A
reasoning model (``normalize_model(model).reasoning``) also bills 64-512 hidden reasoning
tokens per choice (a multiple of 64, drawn from the request's seed, cut to the request's limit,
which they count toward).
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import uuid
from collections.abc import Iterator, Mapping, Sequence
from itertools import zip_longest
from typing import Any, Final

import orjson

from aoai_helpers.core.decoding import forced_function
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.tokens import (
    count_completion,
    count_prompt,
    encoding_for_model,
)
from aoai_helpers.core.tool_schema import function_of, render_calls
from aoai_helpers.local.reply_types import (
    CHOICE_FILTER_RESULTS,
    PROMPT_FILTER_RESULTS,
    VOCABULARY,
    Choice,
    Frame,
    Plan,
    StreamShape,
    ToolCall,
    chat_usage,
    fingerprint,
    non_negative_int,
    obfuscation,
    reply_words,
    sse_data,
    tool_arguments,
)
from aoai_helpers.local.responses_api import (
    hidden_input_tokens,
    response_object,
    responses_frames,
)

__all__ = [
    "CACHE_MIN_TOKENS",
    "CACHE_STEP_TOKENS",
    "CHOICE_FILTER_RESULTS",
    "PROMPT_FILTER_RESULTS",
    "VOCABULARY",
    "Choice",
    "Frame",
    "Plan",
    "StreamShape",
    "ToolCall",
    "billed_tokens",
    "cached_prefix_tokens",
    "chat_usage",
    "embeddings_body",
    "make_plan",
    "output_text",
    "prefix_keys",
    "reply_body",
    "request_limit",
    "sent_outputs",
    "stream_frames",
]


_REQUEST_LIMIT: Final = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
_MAX_CHOICES: Final = 128
_AZURE_SHAPE: Final = StreamShape()
_REASONING_STEP: Final = 64
_REASONING_STEPS: Final = 8  # at most 512 hidden reasoning tokens per choice
#: Prompt caching: shorter prompts are never cached; cached counts grow in these steps.
CACHE_MIN_TOKENS: Final = 1024
CACHE_STEP_TOKENS: Final = 128
#: The request field whose items make message-level prefixes (prompt caching).
_PREFIX_FIELD: Final = {"chat": "messages", "completions": "prompt", "responses": "input"}
#: Request fields rendered before the messages / input (their change breaks every prefix).
_PREFIX_HEAD: Final = ("functions", "instructions", "response_format", "text", "tools")


# --------------------------------------------------------------------------- planning


def _seed(operation: str, request: Mapping[str, Any]) -> int:
    """A seed from the request without its streaming options (stream and not give one text)."""
    stable = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
    raw = orjson.dumps([operation, stable], option=orjson.OPT_SORT_KEYS, default=str)
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")


def _token_pieces(text: str, model: str) -> tuple[str, ...]:
    """``text`` split at token boundaries (bytes regrouped into whole UTF-8 characters)."""
    enc, _ = encoding_for_model(model)
    pieces: list[str] = []
    buf = b""
    for token in enc.encode_ordinary(text):
        buf += enc.decode_single_token_bytes(token)
        try:
            pieces.append(buf.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        buf = b""
    return tuple(pieces)


def _choice_count(operation: str, request: Mapping[str, Any]) -> int:
    n = non_negative_int(request.get("n")) or 1
    if operation == "completions":
        prompt = request.get("prompt")
        if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
            n *= len(prompt)
    return max(1, min(n, _MAX_CHOICES)) if operation != "responses" else 1


def output_text(content: str, name: str = "", arguments: str = "") -> str:
    """One choice's output as :mod:`aoai_helpers.core.usage` reassembles it: the content, then
    the tool call as the model writes it (`` to=functions.NAME`` and its arguments)."""
    return content + (render_calls([(name, arguments)]) if name or arguments else "")


def request_limit(operation: str, request: Mapping[str, Any]) -> int | None:
    """The request's own cap on completion tokens (``max_tokens`` and its kin), if any."""
    keys = _REQUEST_LIMIT.get(operation, ())
    return next((v for k in keys if (v := non_negative_int(request.get(k))) is not None), None)


def sent_outputs(plan: Plan, sent: Mapping[int, Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """What a cut stream delivered of each of ``plan``'s choices, as (content, name,
    arguments); a choice that sent nothing still reasoned (its tokens are billed)."""
    got = [sent.get(c.index, {}) for c in plan.choices]
    return [(p.get("content", ""), p.get("name", ""), p.get("arguments", "")) for p in got]


def billed_tokens(
    outputs: Sequence[tuple[str, str, str]],
    reasoning: Sequence[int],
    model: str,
    operation: str = "chat",
    request: Mapping[str, Any] | None = None,
) -> int:
    """Completion tokens of choices given as (content, tool name, tool arguments) and their
    hidden reasoning, as the real API bills them: each choice's :func:`output_text`
    (``tokens.count_completion``) plus its reasoning — a text reply never above the request's
    limit, its framing included; a tool call as written."""
    limit = request_limit(operation, request) if request is not None else None
    total = 0
    for index, (content, name, arguments) in enumerate(outputs):
        call = 1 if name or arguments else 0
        text = output_text(content, name, arguments)
        billed = count_completion(operation, request, model, [text], [call])
        billed += reasoning[index] if index < len(reasoning) else 0
        total += billed if call or limit is None else min(billed, limit)
    return total


def _reasoning(model: str, seed: int, index: int, limit: int | None) -> int:
    """Hidden reasoning tokens of one choice: 0 unless ``model`` reasons; never over ``limit``."""
    if not normalize_model(model).reasoning:
        return 0
    steps = random.Random(f"reasoning:{seed}:{index}").randint(1, _REASONING_STEPS)
    drawn = _REASONING_STEP * steps
    return drawn if limit is None else min(drawn, limit)


def called_function(operation: str, request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function a reply calls: the one ``tool_choice`` forces
    (:func:`~aoai_helpers.core.decoding.forced_function`), or the first function when a call
    is ``"required"``; ``None`` when the model may answer in text."""
    tools = request.get("tools")
    functions = [f for f in map(function_of, tools if isinstance(tools, list) else []) if f]
    name = forced_function(operation, request)
    if name is not None:
        return next((f for f in functions if f.get("name") == name), {"name": name})
    return functions[0] if request.get("tool_choice") == "required" and functions else None


def _choices(
    operation: str, model: str, request: Mapping[str, Any], limit: int | None, most: int
) -> list[Choice]:
    """The choices of a reply of at most ``most`` visible tokens, under the request ``limit``."""
    seed = _seed(operation, request)
    forced = called_function(operation, request) if operation in ("chat", "responses") else None
    choices: list[Choice] = []
    for index in range(_choice_count(operation, request) if operation != "embeddings" else 0):
        rng = random.Random(seed + index)
        reasoning = _reasoning(model, seed, index, limit)
        if forced is not None:
            args = tool_arguments(forced, rng)
            name = str(forced.get("name") or "function")
            call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, args, _token_pieces(args, model))
            choices.append(Choice(index, (), call, "tool_calls", reasoning))
            continue
        budget = most if limit is None else min(most, limit - reasoning)
        reason = "length" if limit is not None and limit - reasoning < most else "stop"
        choices.append(Choice(index, reply_words(rng, budget), None, reason, reasoning))
    return choices


def make_plan(
    operation: str,
    deployment: str,
    model: str,
    request: Mapping[str, Any],
    *,
    max_reply_tokens: int,
    created: int,
    shape: StreamShape = _AZURE_SHAPE,
) -> Plan:
    """Decide the reply: texts (or tool calls), finish reasons and usage for ``request``."""
    limit = request_limit(operation, request)
    choices = _choices(operation, model, request, limit, max_reply_tokens)
    outputs = [
        (c.text, c.tool.name, c.tool.arguments) if c.tool else (c.text, "", "") for c in choices
    ]
    billed = billed_tokens(outputs, [c.reasoning for c in choices], model, operation, request)
    prefix = {"chat": "chatcmpl-", "completions": "cmpl-", "responses": "resp_"}.get(operation)
    return Plan(
        operation=operation,
        deployment=deployment,
        model=model,
        request=request,
        stream=request.get("stream") is True and operation != "embeddings",
        include_usage=_include_usage(request),
        response_id=f"{prefix}{uuid.uuid4().hex}" if prefix else "",
        created=created,
        prompt_tokens=count_prompt(operation, request, model).tokens
        + hidden_input_tokens(operation, request),
        choices=tuple(choices),
        completion_tokens=billed,
        capped=any(c.finish_reason == "length" for c in choices),
        shape=shape.for_request(request),
    )


def _include_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _prefix_items(operation: str, request: Mapping[str, Any]) -> list[Any]:
    value = request.get(_PREFIX_FIELD.get(operation, ""))
    return list(value) if operation != "completions" and isinstance(value, list) else [value]


def prefix_keys(operation: str, deployment: str, request: Mapping[str, Any]) -> list[str]:
    """Keys of the message-level prefixes of the prompt (key *i*: the first *i* + 1 messages /
    input items, with the tools and formats rendered before them); none for embeddings."""
    if operation not in _PREFIX_FIELD:
        return []
    head = {k: request.get(k) for k in _PREFIX_HEAD}
    raw = orjson.dumps(
        [deployment.lower(), operation, head], option=orjson.OPT_SORT_KEYS, default=str
    )
    digest = hashlib.sha256(raw)
    keys: list[str] = []
    for item in _prefix_items(operation, request):
        digest.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS, default=str))
        keys.append(digest.copy().hexdigest())
    return keys


def cached_prefix_tokens(plan: Plan, items: int) -> int:
    """Prompt tokens of ``plan``'s first ``items`` messages / input items as the prompt cache
    serves them: whole :data:`CACHE_STEP_TOKENS` steps from :data:`CACHE_MIN_TOKENS`, else 0."""
    whole = _prefix_items(plan.operation, plan.request)
    tokens = plan.prompt_tokens
    if items < len(whole):
        cut = {**plan.request, _PREFIX_FIELD[plan.operation]: whole[:items]}
        tokens = min(tokens, count_prompt(plan.operation, cut, plan.model).tokens)
    if tokens < CACHE_MIN_TOKENS:
        return 0
    return tokens - (tokens - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS


# --------------------------------------------------------------------------- bodies


def _message(choice: Choice) -> dict[str, Any]:
    if choice.tool is None:
        return {"content": choice.text, "refusal": None, "role": "assistant"}
    call = {
        "function": {"arguments": choice.tool.arguments, "name": choice.tool.name},
        "id": choice.tool.id,
        "type": "function",
    }
    return {"content": None, "refusal": None, "role": "assistant", "tool_calls": [call]}


def reply_body(plan: Plan, now: float) -> dict[str, Any]:
    """The non-streamed JSON body for a chat, completions or Responses plan."""
    if plan.operation == "responses":
        return response_object(plan, now, done=True)
    choices: list[dict[str, Any]] = []
    for c in plan.choices:
        item: dict[str, Any] = {"content_filter_results": CHOICE_FILTER_RESULTS}
        item |= {"finish_reason": c.finish_reason, "index": c.index, "logprobs": None}
        item |= {"message": _message(c)} if plan.operation == "chat" else {"text": c.text}
        choices.append(item)
    return {
        "choices": choices,
        "created": plan.created,
        "id": plan.response_id,
        "model": plan.model,
        "object": "chat.completion" if plan.operation == "chat" else "text_completion",
        "prompt_filter_results": PROMPT_FILTER_RESULTS,
        "system_fingerprint": fingerprint(plan.model),
        "usage": plan.chat_usage(),
    }


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return list(value)
    return [value]


def embeddings_body(request: Mapping[str, Any], model: str) -> tuple[dict[str, Any], int]:
    """The embeddings body (deterministic unit vectors) and its prompt tokens."""
    dims = non_negative_int(request.get("dimensions")) or (
        3072 if "embedding-3-large" in model else 1536
    )
    base64_wanted = request.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(_embedding_inputs(request.get("input"))):
        digest = hashlib.sha256(orjson.dumps([model, item], default=str)).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        vector = [rng.gauss(0.0, 1.0) for _ in range(dims)]
        norm = sum(v * v for v in vector) ** 0.5 or 1.0
        packed = struct.pack(f"<{dims}f", *(v / norm for v in vector))
        embedding: Any = (
            base64.b64encode(packed).decode()
            if base64_wanted
            else list(struct.unpack(f"<{dims}f", packed))
        )
        data.append({"embedding": embedding, "index": index, "object": "embedding"})
    prompt = count_prompt("embeddings", request, model).tokens
    body = {
        "data": data,
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return body, prompt


# --------------------------------------------------------------------------- streams


def stream_frames(plan: Plan, now: float) -> list[Frame]:
    """Every SSE event of the streamed reply to ``plan``, in order (the last ends the body)."""
    if plan.operation == "responses":
        return list(responses_frames(plan, now))
    return list(_chunk_frames(plan))


#: The head of Azure's chunks that belong to no completion (filter results, annotations).
_EMPTY_HEAD: Final = {"id": "", "object": "", "created": 0, "model": ""}


class _Chunks:
    """Writes one chat / completions stream's chunks with the plan's :class:`StreamShape`."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.chat = plan, plan.operation == "chat"
        self.extra: dict[str, Any] = {"usage": None} if plan.include_usage else {}
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        self.head: dict[str, Any] = {
            "created": plan.created,
            "id": plan.response_id,
            "model": plan.model,
            "object": kind,
            "system_fingerprint": fingerprint(plan.model),
        }
        if plan.shape.azure_2023:  # id, object, created, model; no fingerprint yet
            self.head = {"id": plan.response_id, "object": kind, "created": plan.created}
            self.head["model"] = plan.model
        preamble = self.chat or plan.shape.completions_preamble
        self.prompt_filters: dict[str, Any] = (
            {} if preamble else {"prompt_filter_results": PROMPT_FILTER_RESULTS}
        )

    def data(self, obj: dict[str, Any]) -> bytes:
        if self.plan.shape.obfuscation:
            obj = obj | {"obfuscation": obfuscation(orjson.dumps(obj))}
        return sse_data(obj)

    def chunk(
        self, index: int, delta: dict[str, Any], filters: Any, reason: str | None = None
    ) -> bytes:
        """A one-choice chunk (the first of a preamble-less completions stream: with the prompt's
        filter results)."""
        body = {"delta": delta} if self.chat else {"text": delta.get("content", "")}
        first, self.prompt_filters = self.prompt_filters, {}
        if self.plan.shape.azure_2023:  # index, finish_reason, delta, then the filter results
            choice = {"index": index, "finish_reason": reason, **body}
            choice |= {"content_filter_results": filters} if filters else {}
            return self.data({**self.head, **first, "choices": [choice], "usage": None})
        choice = {"content_filter_results": filters, **body}
        choice |= {"finish_reason": reason, "index": index, "logprobs": None}
        return self.data({"choices": [choice], **self.head, **self.extra, **first})

    def annotation(self, choice: Choice) -> bytes:
        """Azure's asynchronous-filter verdict on a whole choice, with its character offsets."""
        text = choice.tool.arguments if choice.tool else choice.text
        offsets = {"check_offset": 0, "start_offset": 0, "end_offset": len(text)}
        if self.plan.shape.azure_2023:
            item: dict[str, Any] = {"index": choice.index, "finish_reason": None}
            item |= {"content_filter_results": CHOICE_FILTER_RESULTS}
            item |= {"content_filter_offsets": offsets}
            return self.data(_EMPTY_HEAD | {"choices": [item], "usage": None})
        item = {"content_filter_offsets": offsets, "content_filter_results": CHOICE_FILTER_RESULTS}
        item |= {"finish_reason": None, "index": choice.index}
        return self.data({"choices": [item], **_EMPTY_HEAD} | self.extra)

    def preamble(self) -> bytes:
        """The prompt's filter results before any choice (2023: ``prompt_annotations``)."""
        if self.plan.shape.azure_2023:
            notes = {"prompt_annotations": PROMPT_FILTER_RESULTS, "choices": [], "usage": None}
            return self.data(_EMPTY_HEAD | notes)
        body = {"choices": [], **_EMPTY_HEAD, "prompt_filter_results": PROMPT_FILTER_RESULTS}
        return self.data(body | self.extra)


def _chunk_frames(plan: Plan) -> Iterator[Frame]:
    """Chat / completions chunks in Azure's order: preamble, roles, tokens, finish, annotations
    (asynchronous filter), usage."""
    out = _Chunks(plan)
    if not out.prompt_filters:
        yield Frame(out.preamble(), "pre")
    for c in plan.choices if out.chat else ():
        delta: dict[str, Any] = {"content": "", "refusal": None, "role": "assistant"}
        if plan.shape.azure_2023:
            delta = {"role": "assistant"}
        if c.tool is None:
            yield Frame(out.chunk(c.index, delta, {}), "gen")
            continue
        fn = {"arguments": "", "name": c.tool.name}
        call = {"function": fn, "id": c.tool.id, "index": 0, "type": "function"}
        delta |= {"content": None, "tool_calls": [call]}
        yield Frame(out.chunk(c.index, delta, {}), "gen", c.index, "name", c.tool.name)
    verdict = {} if plan.shape.filter_offsets else CHOICE_FILTER_RESULTS
    for row in zip_longest(*(c.tool.pieces if c.tool else c.pieces for c in plan.choices)):
        for c, piece in zip(plan.choices, row, strict=True):
            if piece is None:
                continue
            if c.tool is None:
                data = out.chunk(c.index, {"content": piece}, verdict)
                yield Frame(data, "content", c.index, "content", piece)
            else:
                args = {"tool_calls": [{"function": {"arguments": piece}, "index": 0}]}
                yield Frame(out.chunk(c.index, args, {}), "content", c.index, "arguments", piece)
    for c in plan.choices:
        yield Frame(out.chunk(c.index, {}, {}, c.finish_reason), "post")
    for c in plan.choices if plan.shape.filter_offsets else ():
        yield Frame(out.annotation(c), "post")
    if plan.include_usage:
        usage = {"choices": [], **out.head, "usage": plan.chat_usage()}
        if plan.shape.azure_2023:  # the head first, as in every 2023 chunk
            usage = {**out.head, "choices": [], "usage": plan.chat_usage()}
        yield Frame(out.data(usage), "post")
    yield Frame(b"data: [DONE]\n\n", "post")
