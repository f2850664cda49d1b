"""The simulator's Responses API replies: the ``response`` object and its named stream events.

A reply's ``output`` is what the real API returns (shapes from the OpenAI / Azure OpenAI
Responses reference and real recorded streams, ``tests/data/captures``): a ``reasoning`` item
first for a reasoning model (its ``encrypted_content`` only when the request's ``include``
asks for ``reasoning.encrypted_content``; the reasoning itself is billed, never shown), then
either a ``message`` with one ``output_text`` part or — when ``tool_choice`` forces a
function — a ``function_call`` item with its ``call_id``, name and arguments. Streams are the
named events, each with ``type`` and ``sequence_number``: ``response.created`` /
``.in_progress``, per item ``response.output_item.added`` … ``.done`` (text through
``response.output_text.delta``, arguments through ``response.function_call_arguments.delta``),
then ``response.completed`` (or ``.incomplete``); no ``[DONE]``. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from aoai_helpers.core.prompt_counter import OPAQUE_ITEMS, live_items
from aoai_helpers.local.reply_types import (
    Choice,
    Frame,
    Plan,
    ToolCall,
    item_id,
    non_negative_int,
    obfuscation,
    output_item,
    sse_data,
)

__all__ = ["hidden_input_tokens", "response_object", "responses_frames"]


def hidden_input_tokens(operation: str, request: Mapping[str, Any]) -> int:
    """Input tokens the real API bills for encrypted input items (``reasoning`` and
    ``compaction`` items' ``encrypted_content``) that no offline count can see: the simulator
    bills 3 per 16 characters of it — about the reasoning tokens its own blobs encode
    (:func:`_reasoning_item`) — for the items the model reads (a compaction replaces what came
    before it)."""
    items = request.get("input") if operation == "responses" else None
    if not isinstance(items, list):
        return 0
    hidden = 0
    for item in live_items(items):
        if isinstance(item, Mapping) and item.get("type") in OPAQUE_ITEMS:
            blob = item.get("encrypted_content")
            hidden += len(blob) * 3 // 16 if isinstance(blob, str) else 0
    return hidden


def _suffix(plan: Plan) -> str:
    return plan.response_id.removeprefix("resp_")


def _wants_encrypted(plan: Plan) -> bool:
    include = plan.request.get("include")
    return isinstance(include, list) and "reasoning.encrypted_content" in include


def _reasoning_item(plan: Plan, choice: Choice) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"rs_{_suffix(plan)}", "summary": [], "type": "reasoning"}
    if _wants_encrypted(plan):  # opaque state the caller may send back as input
        seed = f"{plan.response_id}:{choice.reasoning}".encode()
        blob = hashlib.sha256(seed).digest() * max(1, choice.reasoning // 8)
        item["encrypted_content"] = "gAAAAA" + base64.urlsafe_b64encode(blob).decode()
    return item


def _call_item(plan: Plan, call: ToolCall, status: str, *, done: bool) -> dict[str, Any]:
    return {
        "arguments": call.arguments if done else "",
        "call_id": call.id,
        "id": f"fc_{_suffix(plan)}",
        "name": call.name,
        "status": status,
        "type": "function_call",
    }


def _output(plan: Plan, status: str) -> list[dict[str, Any]]:
    """The finished output items of ``plan``."""
    choice = plan.choices[0] if plan.choices else None
    items = [_reasoning_item(plan, choice)] if choice is not None and choice.reasoning else []
    if choice is not None and choice.tool is not None:
        return [*items, _call_item(plan, choice.tool, status, done=True)]
    return [*items, output_item(plan, status, choice.text if choice else "")]


def response_object(plan: Plan, now: float, *, done: bool) -> dict[str, Any]:
    """A Responses API ``response`` object: in progress (no output) or finished."""
    request = plan.request
    status = ("incomplete" if plan.capped else "completed") if done else "in_progress"
    return {
        "background": False,
        "completed_at": int(now) if done else None,
        "created_at": plan.created,
        "error": None,
        "id": plan.response_id,
        "incomplete_details": {"reason": "max_output_tokens"} if done and plan.capped else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": non_negative_int(request.get("max_output_tokens")),
        "metadata": request.get("metadata") or {},
        "model": plan.model,
        "object": "response",
        "output": _output(plan, status) if done else [],
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
        "usage": plan.responses_usage() if done else None,
        "user": request.get("user"),
    }


def responses_frames(plan: Plan, now: float) -> Iterator[Frame]:
    """Named Responses API events, each with ``type`` and ``sequence_number``; no ``[DONE]``."""
    seq = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\n".encode() + sse_data(obj)

    def pad(piece: str) -> dict[str, str]:
        return {"obfuscation": obfuscation(piece.encode())} if plan.shape.obfuscation else {}

    started = response_object(plan, plan.created, done=False)
    final = response_object(plan, now, done=True)
    yield Frame(event("response.created", response=started), "pre")
    yield Frame(event("response.in_progress", response=started), "pre")
    choice = plan.choices[0] if plan.choices else None
    index = 0
    if choice is not None and choice.reasoning:  # the reasoning item: billed, never shown
        item = final["output"][0]
        yield Frame(event("response.output_item.added", output_index=0, item=item), "pre")
        yield Frame(event("response.output_item.done", output_index=0, item=item), "pre")
        index = 1
    if choice is not None and choice.tool is not None:
        yield from _call_events(plan, choice.tool, index, final, event, pad)
    else:
        yield from _text_events(plan, choice, index, final, event, pad)
    kind = "response.incomplete" if plan.capped else "response.completed"
    yield Frame(event(kind, response=final), "post")


def _call_events(
    plan: Plan, call: ToolCall, index: int, final: dict[str, Any], event: Any, pad: Any
) -> Iterator[Frame]:
    added = _call_item(plan, call, "in_progress", done=False)
    where = {"item_id": added["id"], "output_index": index}
    data = event("response.output_item.added", output_index=index, item=added)
    yield Frame(data, "gen", 0, "name", call.name)
    for piece in call.pieces:
        delta = event("response.function_call_arguments.delta", **where, delta=piece, **pad(piece))
        yield Frame(delta, "content", 0, "arguments", piece)
    args = call.arguments
    done = event("response.function_call_arguments.done", **where, arguments=args, name=call.name)
    yield Frame(done, "post")
    item = final["output"][index]
    yield Frame(event("response.output_item.done", output_index=index, item=item), "post")


def _text_events(
    plan: Plan, choice: Choice | None, index: int, final: dict[str, Any], event: Any, pad: Any
) -> Iterator[Frame]:
    where = {"item_id": item_id(plan), "output_index": index, "content_index": 0}
    text = choice.text if choice else ""
    empty_part = {"annotations": [], "text": "", "type": "output_text"}
    added = output_item(plan, "in_progress", None)
    yield Frame(event("response.output_item.added", output_index=index, item=added), "pre")
    yield Frame(event("response.content_part.added", **where, part=empty_part), "pre")
    for piece in choice.pieces if choice else ():
        delta = event("response.output_text.delta", **where, delta=piece, logprobs=[], **pad(piece))
        yield Frame(delta, "content", 0, "content", piece)
    yield Frame(event("response.output_text.done", **where, text=text, logprobs=[]), "post")
    part = empty_part | {"text": text}
    yield Frame(event("response.content_part.done", **where, part=part), "post")
    item = final["output"][index]
    yield Frame(event("response.output_item.done", output_index=index, item=item), "post")
