"""Pure data for the AOAI simulator: deterministic replies, Azure-shaped bodies and SSE frames.
(The reply's types and vocabulary: :mod:`aoai_helpers.local.reply_types`.)

Nothing here does I/O or keeps state: :func:`make_plan` turns a request into a :class:`Plan`
(the reply text per choice, token counts), and the ``*_body`` / :func:`stream_frames`
functions render a plan as the JSON body or the SSE frames Azure OpenAI would send.
:mod:`aoai_helpers.local.simulator` adds routing, auth, latency and faults.

Reply text is drawn from :data:`VOCABULARY`, words that are one token each (with a leading
space, and capitalised at the start) in both ``o200k_base`` and ``cl100k_base``, so a reply
of *n* words is *n* completion tokens and each streamed content chunk is one token.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import uuid
from collections.abc import Iterator, Mapping
from itertools import zip_longest
from typing import Any, Final

import orjson

from aoai_helpers.core.tokens import count_completion_text, count_prompt, encoding_for_model
from aoai_helpers.local.reply_types import (
    CHOICE_FILTER_RESULTS,
    PROMPT_FILTER_RESULTS,
    VOCABULARY,
    Choice,
    Frame,
    Plan,
    ToolCall,
    output_text,
)

__all__ = [
    "CHOICE_FILTER_RESULTS",
    "PROMPT_FILTER_RESULTS",
    "VOCABULARY",
    "Choice",
    "Frame",
    "Plan",
    "ToolCall",
    "chat_usage",
    "embeddings_body",
    "make_plan",
    "output_text",
    "reply_body",
    "stream_frames",
]


_REQUEST_LIMIT: Final = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
_MAX_CHOICES: Final = 128


# --------------------------------------------------------------------------- planning


def _seed(operation: str, request: Mapping[str, Any]) -> int:
    """A seed from the request without its streaming options (stream and not give one text)."""
    stable = {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
    raw = orjson.dumps([operation, stable], option=orjson.OPT_SORT_KEYS, default=str)
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _words(rng: random.Random, count: int) -> tuple[str, ...]:
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return tuple(w.capitalize() if i == 0 else " " + w for i, w in enumerate(words))


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


def _forced_function(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function a chat request forces (``tool_choice`` required / named), if any."""
    tools = request.get("tools")
    functions: list[Mapping[str, Any]] = [
        t["function"]
        for t in (tools if isinstance(tools, list) else ())
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    choice = request.get("tool_choice")
    if choice == "required" and functions:
        return functions[0]
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        if isinstance(name, str):
            return next((f for f in functions if f.get("name") == name), {"name": name})
    return None


def _arguments(function: Mapping[str, Any], rng: random.Random) -> str:
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


def _choice_count(operation: str, request: Mapping[str, Any]) -> int:
    n = _int(request.get("n")) or 1
    if operation == "completions":
        prompt = request.get("prompt")
        if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
            n *= len(prompt)
    return max(1, min(n, _MAX_CHOICES)) if operation != "responses" else 1


def make_plan(
    operation: str,
    deployment: str,
    model: str,
    request: Mapping[str, Any],
    *,
    max_reply_tokens: int,
    created: int,
) -> Plan:
    """Decide the reply: texts (or tool calls), finish reasons and usage for ``request``."""
    seed = _seed(operation, request)
    limit = next(
        (v for k in _REQUEST_LIMIT.get(operation, ()) if (v := _int(request.get(k))) is not None),
        None,
    )
    length = max_reply_tokens if limit is None else min(limit, max_reply_tokens)
    capped = limit is not None and limit < max_reply_tokens
    forced = _forced_function(request) if operation == "chat" else None
    choices: list[Choice] = []
    for index in range(_choice_count(operation, request) if operation != "embeddings" else 0):
        rng = random.Random(seed + index)
        if forced is not None:
            args = _arguments(forced, rng)
            name = str(forced.get("name") or "function")
            call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, args, _token_pieces(args, model))
            choices.append(Choice(index, (), call, "tool_calls"))
        else:
            choices.append(Choice(index, _words(rng, length), None, "length" if capped else "stop"))
    texts = [
        output_text(c.text, *((c.tool.name, c.tool.arguments) if c.tool else ())) for c in choices
    ]
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
        prompt_tokens=count_prompt(operation, request, model).tokens,
        choices=tuple(choices),
        completion_tokens=count_completion_text(texts, model),
        capped=capped,
    )


def _include_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


# --------------------------------------------------------------------------- bodies


def chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    """A chat / completions ``usage`` object as Azure reports it (2024-10-21 and later)."""
    return {
        "completion_tokens": completion,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": prompt,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    # cache_write_tokens is not in azure-facts.md; the openai SDK's model requires it.
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


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
        return _response_object(plan, now, done=True)
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
        "system_fingerprint": _fingerprint(plan.model),
        "usage": chat_usage(plan.prompt_tokens, plan.completion_tokens),
    }


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return list(value)
    return [value]


def embeddings_body(request: Mapping[str, Any], model: str) -> tuple[dict[str, Any], int]:
    """The embeddings body (deterministic unit vectors) and its prompt tokens."""
    dims = _int(request.get("dimensions")) or (3072 if "embedding-3-large" in model else 1536)
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


def _item_id(plan: Plan) -> str:
    return "msg_" + plan.response_id.removeprefix("resp_")


def _output_item(plan: Plan, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"annotations": [], "text": text, "type": "output_text"}]
    return {
        "content": content,
        "id": _item_id(plan),
        "role": "assistant",
        "status": status,
        "type": "message",
    }


def _response_object(plan: Plan, now: float, *, done: bool) -> dict[str, Any]:
    """A Responses API ``response`` object: in progress (no output) or finished."""
    request = plan.request
    status = ("incomplete" if plan.capped else "completed") if done else "in_progress"
    text = plan.choices[0].text if plan.choices else ""
    return {
        "background": False,
        "completed_at": int(now) if done else None,
        "created_at": plan.created,
        "error": None,
        "id": plan.response_id,
        "incomplete_details": {"reason": "max_output_tokens"} if done and plan.capped else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": _int(request.get("max_output_tokens")),
        "metadata": request.get("metadata") or {},
        "model": plan.model,
        "object": "response",
        "output": [_output_item(plan, status, text)] if done else [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "status": status,
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _responses_usage(plan.prompt_tokens, plan.completion_tokens) if done else None,
        "user": request.get("user"),
    }


# --------------------------------------------------------------------------- streams


def _data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_frames(plan: Plan, now: float) -> list[Frame]:
    """Every SSE event of the streamed reply to ``plan``, in order (the last ends the body)."""
    if plan.operation == "responses":
        return list(_responses_frames(plan, now))
    return list(_chunk_frames(plan))


def _chunk_frames(plan: Plan) -> Iterator[Frame]:
    """Chat / completions chunks in Azure's order: preamble, roles, tokens, finish, usage."""
    chat = plan.operation == "chat"
    extra = {"usage": None} if plan.include_usage else {}
    head = {
        "created": plan.created,
        "id": plan.response_id,
        "model": plan.model,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "system_fingerprint": _fingerprint(plan.model),
    }

    def chunk(index: int, delta: dict[str, Any], filters: Any, reason: str | None = None) -> bytes:
        choice: dict[str, Any] = {"content_filter_results": filters}
        choice |= {"delta": delta} if chat else {"text": delta.get("content", "")}
        choice |= {"finish_reason": reason, "index": index, "logprobs": None}
        return _data({"choices": [choice], **head, **extra})

    preamble = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    yield Frame(_data(preamble | {"prompt_filter_results": PROMPT_FILTER_RESULTS} | extra), "pre")
    if chat:
        for c in plan.choices:
            delta: dict[str, Any] = {"content": "", "refusal": None, "role": "assistant"}
            if c.tool is None:
                yield Frame(chunk(c.index, delta, {}), "gen")
                continue
            fn = {"arguments": "", "name": c.tool.name}
            call = {"function": fn, "id": c.tool.id, "index": 0, "type": "function"}
            delta |= {"content": None, "tool_calls": [call]}
            yield Frame(chunk(c.index, delta, {}), "gen", c.index, "name", c.tool.name)
    for row in zip_longest(*(c.tool.pieces if c.tool else c.pieces for c in plan.choices)):
        for c, piece in zip(plan.choices, row, strict=True):
            if piece is None:
                continue
            if c.tool is None:
                data = chunk(c.index, {"content": piece}, CHOICE_FILTER_RESULTS)
                yield Frame(data, "content", c.index, "content", piece)
            else:
                args = {"tool_calls": [{"function": {"arguments": piece}, "index": 0}]}
                yield Frame(chunk(c.index, args, {}), "content", c.index, "arguments", piece)
    for c in plan.choices:
        yield Frame(chunk(c.index, {}, {}, c.finish_reason), "post")
    if plan.include_usage:
        usage = chat_usage(plan.prompt_tokens, plan.completion_tokens)
        yield Frame(_data({"choices": [], **head, "usage": usage}), "post")
    yield Frame(b"data: [DONE]\n\n", "post")


def _responses_frames(plan: Plan, now: float) -> Iterator[Frame]:
    """Named Responses API events, each with ``type`` and ``sequence_number``; no ``[DONE]``."""
    seq = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\n".encode() + _data(obj)

    started = _response_object(plan, plan.created, done=False)
    final = _response_object(plan, now, done=True)
    where = {"item_id": _item_id(plan), "output_index": 0, "content_index": 0}
    text = plan.choices[0].text if plan.choices else ""
    empty_part = {"annotations": [], "text": "", "type": "output_text"}
    yield Frame(event("response.created", response=started), "pre")
    yield Frame(event("response.in_progress", response=started), "pre")
    added = _output_item(plan, "in_progress", None)
    yield Frame(event("response.output_item.added", output_index=0, item=added), "pre")
    yield Frame(event("response.content_part.added", **where, part=empty_part), "pre")
    for piece in plan.choices[0].pieces if plan.choices else ():
        delta = event("response.output_text.delta", **where, delta=piece, logprobs=[])
        yield Frame(delta, "content", 0, "content", piece)
    yield Frame(event("response.output_text.done", **where, text=text, logprobs=[]), "post")
    part = empty_part | {"text": text}
    yield Frame(event("response.content_part.done", **where, part=part), "post")
    item = final["output"][0]
    yield Frame(event("response.output_item.done", output_index=0, item=item), "post")
    kind = "response.incomplete" if plan.capped else "response.completed"
    yield Frame(event(kind, response=final), "post")
