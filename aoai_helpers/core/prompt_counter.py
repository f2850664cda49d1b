"""The prompt walker: counts a request's tokens the way the chat format frames them.

:mod:`aoai_helpers.core.tokens` drives it (its module docstring states the counting rules);
the framing constants come from :mod:`aoai_helpers.core.chat_format`, the rendering of tool
definitions, schemas and calls from :mod:`aoai_helpers.core.tool_schema`. Best effort over
arbitrary JSON: nothing here raises for a malformed request. Pure: no I/O.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Final

import tiktoken

from aoai_helpers.core.chat_format import (
    ECHOED_FIELDS,
    HISTORY_CALL_FRAME,
    PER_MESSAGE,
    PER_NAME,
    REASONING_PRIMING,
    REPLY_PRIMING,
    RESPONSES_TOOLS_FRAME,
    SCHEMA_FRAME,
    TOOLS_FRAME,
    TOOLS_IN_SYSTEM,
)
from aoai_helpers.core.model_names import ModelInfo
from aoai_helpers.core.tokenizer_files import get_encoding
from aoai_helpers.core.tool_schema import (
    function_of,
    history_arguments,
    json_schema_spec,
    proven_function,
    render_calls,
    render_functions,
    schema_section,
    undescribed_properties,
)

__all__ = [
    "OPAQUE_ITEMS",
    "PromptCounter",
    "as_text",
    "count_inputs",
    "count_responses",
    "count_tokens",
    "has_system",
    "live_items",
    "reasoning_with_tools",
]

# Image estimates (a 1024x1024 image at high detail: 85 base + 4 tiles x 170).
_IMAGE_LOW: Final = 85
_IMAGE_HIGH: Final = 85 + 4 * 170

_CACHEABLE_LEN: Final = 2048  # only short strings are memoised (system prompts, roles …)


@functools.lru_cache(maxsize=16384)
def _count_cached(encoding: str, text: str) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


def count_tokens(enc: tiktoken.Encoding, text: str) -> int:
    if len(text) <= _CACHEABLE_LEN:
        return _count_cached(enc.name, text)
    return len(enc.encode_ordinary(text))


def as_text(value: Any) -> str:
    """A string as is; anything else as compact JSON (never raises)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


class PromptCounter:
    """Accumulates tokens and exactness for one request."""

    __slots__ = (
        "call_names",
        "enc",
        "exact",
        "has_functions",
        "has_system",
        "lower",
        "per_message",
        "per_name",
        "tokens",
        "tools_frame",
    )

    def __init__(self, enc: tiktoken.Encoding, exact: bool, has_system: bool = False) -> None:
        self.enc = enc
        self.tokens = 0
        self.exact = exact
        self.lower = False
        self.has_system = has_system
        self.tools_frame = TOOLS_IN_SYSTEM if has_system else TOOLS_FRAME
        self.per_message, self.per_name = PER_MESSAGE, PER_NAME
        self.call_names: dict[str, str] = {}
        self.has_functions = False

    def opaque(self) -> None:
        """Something is in the request whose tokens cannot be counted: the count is a floor."""
        self.exact = False
        self.lower = True

    def text(self, value: Any) -> None:
        if isinstance(value, str):
            self.tokens += count_tokens(self.enc, value)
        elif value is not None:
            self.exact = False
            self.tokens += count_tokens(self.enc, as_text(value))

    def image(self, part: Mapping[str, Any]) -> None:
        self.exact = False
        spec = part.get("image_url")
        detail = spec.get("detail") if isinstance(spec, Mapping) else part.get("detail")
        self.tokens += _IMAGE_LOW if detail == "low" else _IMAGE_HIGH

    def content(self, content: Any) -> None:
        if not isinstance(content, list):
            self.text(content)  # a string, None, or garbage (as JSON, not exact)
            return
        self.exact = False  # list content: not API-verified
        for part in content:
            if isinstance(part, str) or not isinstance(part, Mapping):
                self.text(part)
            elif part.get("type") in ("image_url", "input_image"):
                self.image(part)
            elif isinstance(part.get("text"), str):
                self.text(part["text"])
            elif part.get("type") == "refusal":
                self.text(part.get("refusal"))
            # audio, files and unknown parts: no text tokens to count

    def tool_calls(self, calls: list[Any]) -> None:
        """An assistant message's tool calls, as the model reads them back: its arguments as
        compact JSON whatever the client sent (:func:`history_arguments`), the tool results
        that follow under the role ``functions.NAME`` (:meth:`message`), and
        :data:`HISTORY_CALL_FRAME` per message — real captures: 25 of 36 exact, where the
        calls as sent with the completion's framing were 10 of 31."""
        self.exact = False
        rendered = []
        for call in calls:
            fn = call.get("function", call) if isinstance(call, Mapping) else None
            if not isinstance(fn, Mapping):
                self.text(call)
                continue
            name, args = as_text(fn.get("name") or ""), fn.get("arguments")
            rendered.append(
                (name, history_arguments(args if isinstance(args, str) else as_text(args)))
            )
            call_id = fn.get("call_id", call.get("id")) if isinstance(call, Mapping) else None
            if isinstance(call_id, str):
                self.call_names[call_id] = name
        if rendered:
            self.tokens += count_tokens(self.enc, render_calls(rendered)) + HISTORY_CALL_FRAME

    def function_call(self, call: Any) -> None:
        """A Responses ``function_call`` input item: one call, as the model wrote it."""
        self.tool_calls([call])

    def message(self, message: Any) -> None:
        self.tokens += self.per_message
        if not isinstance(message, Mapping):
            self.text(message)
            return
        for key, value in message.items():
            if key == "role" and value == "tool":
                self.tool_role(message.get("tool_call_id"))
            elif key == "content":
                self.content(value)
            elif key == "tool_calls":
                self.tool_calls(value if isinstance(value, list) else [value])
            elif key == "function_call":
                self.tool_calls([value])
            elif key == "tool_call_id":
                self.exact = False  # documented choice: the id is not counted
            elif key in ECHOED_FIELDS or value is None or value == []:
                continue  # a response's fields echoed back (annotations, refusal, audio …)
            else:
                self.text(value)
                if key == "name":
                    self.tokens += self.per_name
                    self.exact = False  # real captures disagree on the +1 per name
        if message.get("role") in ("tool", "function"):
            self.exact = False

    def tool_role(self, call_id: Any) -> None:
        """A tool result's role as the model reads it: ``functions.NAME`` of the call it
        answers (real captures); ``tool`` when that call is not in the request."""
        name = self.call_names.get(call_id) if isinstance(call_id, str) else None
        self.text("tool" if name is None else f"functions.{name}")

    def messages(self, messages: Any) -> None:
        if not isinstance(messages, list):
            self.exact = False
            messages = [] if messages is None else [messages]
        for message in messages:
            self.message(message)
        self.tokens += REPLY_PRIMING

    def functions(self, tools: Any) -> int:
        """Add the tokens of function definitions (``tools`` or the legacy ``functions``) as
        the model reads them (:func:`~aoai_helpers.core.tool_schema.render_functions`); other
        tools (built-in, custom) as their JSON, an approximation. Returns how many of those."""
        if tools is None:
            return 0
        if not isinstance(tools, list):
            tools = [tools]
        functions = []
        for tool in tools:
            fn = function_of(tool)
            if fn is None:
                self.exact = False
                self.text(tool)  # built-in / custom tool: its JSON as a rough estimate
            else:
                functions.append(fn)
        if functions:
            self.has_functions = True
            frame = self.tools_frame
            undescribed = sum(map(undescribed_properties, functions))
            self.tokens += count_tokens(self.enc, render_functions(functions)) + frame - undescribed
            if not all(map(proven_function, functions)):
                self.exact = False
        return len(tools) - len(functions)

    def response_format(self, fmt: Any) -> None:
        """A ``json_schema`` response format, as the model reads it (:data:`SCHEMA_FRAME`)."""
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
            return
        spec = json_schema_spec(fmt)
        if spec is None:
            self.exact = False
            return
        self.exact = False  # fitted on few captures: an approximation until proven
        text = schema_section(spec)
        self.tokens += count_tokens(self.enc, text) + SCHEMA_FRAME


def has_system(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, Mapping) and m.get("role") in ("system", "developer") for m in messages
    )


def count_inputs(counter: PromptCounter, value: Any) -> None:
    """Completions prompts / embeddings input: strings, lists of strings, or token ids."""
    if isinstance(value, str):
        counter.text(value)
    elif isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            counter.tokens += len(value)
            return
        for item in value:
            if isinstance(item, list | str):
                count_inputs(counter, item)
            else:
                counter.text(item)
    elif value is None:
        counter.exact = False
    else:
        counter.text(value)


#: Responses API input items the model sees only as opaque, encrypted state.
OPAQUE_ITEMS: Final = frozenset({"reasoning", "compaction"})


def reasoning_with_tools(counter: PromptCounter, info: ModelInfo) -> None:
    """A reasoning model given function tools bills input beyond their rendering (a preamble
    of its own: 7 of 7 real captures, chat and Responses, 5-86 tokens more): a lower bound."""
    if info.reasoning and counter.has_functions:
        counter.opaque()


def live_items(items: list[Any]) -> list[Any]:
    """The input items the model reads: a ``compaction`` item replaces every item before it."""
    last = -1
    for pos, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("type") == "compaction":
            last = pos
    return items[last:] if last >= 0 else items


def count_responses(counter: PromptCounter, request: Mapping[str, Any], info: ModelInfo) -> None:
    """The Responses API: tools, ``text.format``, ``instructions`` and the live input items."""
    counter.exact = False
    counter.tools_frame = RESPONSES_TOOLS_FRAME
    if counter.functions(request.get("tools")):
        counter.opaque()  # built-in tools (web search, file search …) add input nobody sees
    reasoning_with_tools(counter, info)
    if request.get("previous_response_id") or request.get("conversation"):
        counter.opaque()  # the stored conversation is part of the input
    text = request.get("text")
    if isinstance(text, Mapping):
        counter.response_format(text.get("format"))  # Responses: text.format, flat
    instructions = request.get("instructions")
    if instructions is not None and instructions != "":  # "" adds no system message
        counter.message({"role": "system", "content": instructions})
    items = request.get("input")
    if isinstance(items, str) or not isinstance(items, list):
        items = [] if items is None else [{"role": "user", "content": items}]
    for item in live_items(items):
        kind = item.get("type") if isinstance(item, Mapping) else None
        if not isinstance(item, Mapping):
            counter.message(item)
        elif kind in OPAQUE_ITEMS:
            counter.opaque()  # encrypted_content / a compacted history: not text to count
        elif "role" in item:
            counter.message({k: item[k] for k in ("role", "content", "name") if k in item})
        elif kind == "function_call":  # chat's history rule; fitted on chat captures only
            counter.tokens += PER_MESSAGE
            counter.function_call(item)
        elif kind == "function_call_output":
            counter.tokens += PER_MESSAGE
            counter.tool_role(item.get("call_id"))
            counter.text(item.get("output"))
        elif kind == "item_reference":
            counter.opaque()  # refers to stored state we cannot see
        else:
            counter.message(item)
    counter.tokens += REASONING_PRIMING if info.reasoning else REPLY_PRIMING
