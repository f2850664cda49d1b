"""Offline tokenizer and prompt / completion token counting (docs/architecture.md).

The two tiktoken vocabularies the billed models use ship with the package
(``data/tokenizers/{o200k_base,cl100k_base}.tiktoken``). They are read from there, checked
against the sha256 tiktoken itself pins (:data:`PINNED_SHA256`) and turned into
:class:`tiktoken.Encoding` objects here; ``tiktoken.get_encoding`` is never called, so tiktoken
never attempts a download and never writes to its cache directory.

Counting rules
--------------
*Chat* prompts follow the OpenAI cookbook "How to count tokens with tiktoken"
(https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb),
whose counts were checked against the API: 3 tokens per message, every string value of a
message encoded (role, content, name …), 1 more per ``name``, 3 to prime the reply. Function /
tool definitions add ``func_init`` per function, its ``name:description`` line, ``prop_init``
once if it has properties, per property ``prop_key`` + its ``key:type:description`` line (+
``enum_init`` and ``enum_item`` + the item per enum value) and ``func_end`` once.

Estimates (``exact=False``), with the choices made:

- image parts: ``detail: low`` = 85 tokens, anything else = 765 (a 1024x1024 image, 85 + 4
  tiles x 170); audio / file parts count 0 (their tokens are not text tokens);
- content given as a list of parts (not verified against the API), assistant ``tool_calls`` /
  ``function_call`` (function name + arguments encoded; ids and ``type`` not counted), ``tool``
  role messages (content encoded, ``tool_call_id`` not counted), non-function tools and
  nested parameter schemas, ``response_format`` JSON schemas (not counted);
- anything that is not the expected shape (numbers, nested objects) is encoded as its JSON;
- the Responses API (``instructions`` counted as a system message, ``input`` items like chat
  messages), completions lists and every call for an unrecognised model.

Nothing here raises for a malformed request: counting is best effort over arbitrary JSON.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import tiktoken

from aoai_helpers.core.model_names import CL100K, O200K, ModelInfo, normalize_model
from aoai_helpers.core.shrink import MARKER
from aoai_helpers.core.tokenizer_files import (
    DATA_DIR,
    ENCODING_NAMES,
    PINNED_SHA256,
    get_encoding,
    load_encoding,
    verify_tokenizer_files,
)

__all__ = [
    "DATA_DIR",
    "ENCODING_NAMES",
    "PINNED_SHA256",
    "TokenCount",
    "count_chat_prompt",
    "count_completion_text",
    "count_prompt",
    "count_text",
    "encoding_for_model",
    "get_encoding",
    "load_encoding",
    "proven_tokens",
    "verify_tokenizer_files",
]

_PER_MESSAGE: Final = 3
_PER_NAME: Final = 1
_REPLY_PRIMING: Final = 3
_FUNC_INIT: Final[dict[str, int]] = {O200K: 7, CL100K: 10}
_PROP_INIT: Final = 3
_PROP_KEY: Final = 3
_ENUM_INIT: Final = -3
_ENUM_ITEM: Final = 3
_FUNC_END: Final = 12

# Image estimates (a 1024x1024 image at high detail: 85 base + 4 tiles x 170).
_IMAGE_LOW: Final = 85
_IMAGE_HIGH: Final = 85 + 4 * 170

_CACHEABLE_LEN: Final = 2048  # only short strings are memoised (system prompts, roles …)
_SIMPLE_PROPERTY_KEYS: Final = frozenset({"type", "description", "enum"})
_COUNTED_OPERATIONS: Final = frozenset({"chat", "completions", "embeddings", "responses"})


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count, whether it is exact, the encoding used and whether the model was known."""

    tokens: int
    exact: bool
    encoding: str
    model_known: bool


# --------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=4096)
def encoding_for_model(model: str | None) -> tuple[tiktoken.Encoding, ModelInfo]:
    """Return the encoding a model uses and its :class:`ModelInfo` (unknown → ``o200k_base``)."""
    info = normalize_model(model)
    return get_encoding(info.encoding), info


# --------------------------------------------------------------------------- counting


@functools.lru_cache(maxsize=16384)
def _count_cached(encoding: str, text: str) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


def _count(enc: tiktoken.Encoding, text: str) -> int:
    if len(text) <= _CACHEABLE_LEN:
        return _count_cached(enc.name, text)
    return len(enc.encode_ordinary(text))


def count_text(text: str, model: str | None) -> int:
    """Number of tokens of ``text`` for ``model``; special-token text is treated as plain text."""
    enc, _ = encoding_for_model(model)
    return _count(enc, _as_text(text))


def count_completion_text(texts: Iterable[str], model: str | None) -> int:
    """Sum of the tokens of each choice's text (reassembled streamed output); ``None`` skipped."""
    enc, _ = encoding_for_model(model)
    return sum(_count(enc, _as_text(t)) for t in texts if t is not None)


def _as_text(value: Any) -> str:
    """A string as is; anything else as compact JSON (never raises)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


class _Counter:
    """Accumulates tokens and exactness for one request."""

    __slots__ = ("enc", "exact", "tokens")

    def __init__(self, enc: tiktoken.Encoding, exact: bool) -> None:
        self.enc = enc
        self.tokens = 0
        self.exact = exact

    def text(self, value: Any) -> None:
        if isinstance(value, str):
            self.tokens += _count(self.enc, value)
        elif value is not None:
            self.exact = False
            self.tokens += _count(self.enc, _as_text(value))

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

    def function_call(self, call: Any) -> None:
        self.exact = False
        if isinstance(call, Mapping):
            fn = call.get("function", call)
            if isinstance(fn, Mapping):
                self.text(fn.get("name"))
                self.text(fn.get("arguments"))
                return
        self.text(call)

    def message(self, message: Any) -> None:
        self.tokens += _PER_MESSAGE
        if not isinstance(message, Mapping):
            self.text(message)
            return
        for key, value in message.items():
            if key == "content":
                self.content(value)
            elif key == "tool_calls":
                calls = value if isinstance(value, list) else [value]
                for call in calls:
                    self.function_call(call)
            elif key == "function_call":
                self.function_call(value)
            elif key == "tool_call_id":
                self.exact = False  # documented choice: the id is not counted
            else:
                self.text(value)
                if key == "name":
                    self.tokens += _PER_NAME
        if message.get("role") in ("tool", "function"):
            self.exact = False

    def messages(self, messages: Any) -> None:
        if not isinstance(messages, list):
            self.exact = False
            messages = [] if messages is None else [messages]
        for message in messages:
            self.message(message)
        self.tokens += _REPLY_PRIMING

    def functions(self, tools: Any) -> None:
        """Add the cookbook's function-definition tokens for ``tools`` or legacy ``functions``."""
        if tools is None:
            return
        if not isinstance(tools, list):
            tools = [tools]
        func_init = _FUNC_INIT.get(self.enc.name, _FUNC_INIT[O200K])
        seen = False
        for tool in tools:
            fn = _function_of(tool)
            if fn is None:
                self.exact = False
                self.text(tool)  # built-in / custom tool: its JSON as a rough estimate
                continue
            seen = True
            self.tokens += func_init
            desc = _strip_period(fn.get("description"))
            self.tokens += _count(self.enc, f"{_as_text(fn.get('name') or '')}:{desc}")
            params = fn.get("parameters")
            props = params.get("properties") if isinstance(params, Mapping) else None
            if params is not None and not isinstance(props, Mapping):
                self.exact = False
            if isinstance(props, Mapping) and props:
                self.tokens += _PROP_INIT
                for key, prop in props.items():
                    self._property(str(key), prop)
        if seen:
            self.tokens += _FUNC_END

    def _property(self, key: str, prop: Any) -> None:
        self.tokens += _PROP_KEY
        if not isinstance(prop, Mapping):
            self.exact = False
            prop = {}
        elif not _SIMPLE_PROPERTY_KEYS.issuperset(prop):
            self.exact = False  # nested schemas, defaults …: beyond the verified formula
        enum = prop.get("enum")
        if isinstance(enum, list):
            self.tokens += _ENUM_INIT
            for item in enum:
                self.tokens += _ENUM_ITEM + _count(self.enc, _as_text(item))
        ptype = prop.get("type") or ""
        desc = _strip_period(prop.get("description"))
        self.tokens += _count(self.enc, f"{key}:{_as_text(ptype)}:{desc}")

    def result(self, info: ModelInfo) -> TokenCount:
        return TokenCount(self.tokens, self.exact and info.known, self.enc.name, info.known)


def _strip_period(desc: Any) -> str:
    text = _as_text(desc) if desc is not None else ""
    return text[:-1] if text.endswith(".") else text


def _function_of(tool: Any) -> Mapping[str, Any] | None:
    """The function object of a chat tool, a Responses function tool or a legacy function."""
    if not isinstance(tool, Mapping):
        return None
    fn = tool.get("function")
    if isinstance(fn, Mapping):
        return fn
    kind = tool.get("type")
    if (kind is None or kind == "function") and "name" in tool:
        return tool
    return None


def count_chat_prompt(request: Mapping[str, Any] | None, model: str | None) -> TokenCount:
    """Count the prompt tokens of a chat-completions request (messages + tools / functions).

    ``exact`` is True only for text-only chats (string content, names, flat function
    parameters) of a known model: the forms the cookbook's counts were verified on.
    """
    enc, info = encoding_for_model(model)
    if not isinstance(request, Mapping):
        return TokenCount(0, False, enc.name, info.known)
    counter = _Counter(enc, exact=True)
    counter.functions(request.get("tools"))
    counter.functions(request.get("functions"))
    response_format = request.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        counter.exact = False  # the schema costs tokens the formula does not cover
    counter.messages(request.get("messages"))
    return counter.result(info)


def _count_inputs(counter: _Counter, value: Any) -> None:
    """Completions prompts / embeddings input: strings, lists of strings, or token ids."""
    if isinstance(value, str):
        counter.text(value)
    elif isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            counter.tokens += len(value)
            return
        for item in value:
            if isinstance(item, list | str):
                _count_inputs(counter, item)
            else:
                counter.text(item)
    elif value is None:
        counter.exact = False
    else:
        counter.text(value)


def _count_responses(counter: _Counter, request: Mapping[str, Any]) -> None:
    counter.exact = False
    counter.functions(request.get("tools"))
    instructions = request.get("instructions")
    if instructions is not None:
        counter.message({"role": "system", "content": instructions})
    items = request.get("input")
    if isinstance(items, str) or not isinstance(items, list):
        items = [] if items is None else [{"role": "user", "content": items}]
    for item in items:
        if not isinstance(item, Mapping):
            counter.message(item)
        elif "role" in item:
            counter.message({k: item[k] for k in ("role", "content", "name") if k in item})
        elif item.get("type") == "function_call":
            counter.tokens += _PER_MESSAGE
            counter.function_call(item)
        elif item.get("type") == "function_call_output":
            counter.tokens += _PER_MESSAGE
            counter.text(item.get("output"))
        elif item.get("type") == "item_reference":
            continue  # refers to stored state we cannot see
        else:
            counter.message(item)
    counter.tokens += _REPLY_PRIMING


def count_prompt(
    operation: str, request: Mapping[str, Any] | None, model: str | None
) -> TokenCount:
    """Count the prompt tokens of a request for ``operation``.

    ``operation`` is ``chat`` | ``completions`` | ``embeddings`` | ``responses`` | ``other``.
    ``other`` (or a missing request) counts 0 tokens, not exact. Responses API counts are
    always estimates.
    """
    if isinstance(request, Mapping) and isinstance(request.get(MARKER), Mapping):
        # a request shrunk to fit the event: never below what its recorded size proves
        counted = count_prompt(operation, {k: v for k, v in request.items() if k != MARKER}, model)
        floor = proven_tokens(operation, request, counted.encoding)
        return TokenCount(max(counted.tokens, floor), False, counted.encoding, counted.model_known)
    if operation == "chat":
        return count_chat_prompt(request, model)
    enc, info = encoding_for_model(model)
    if not isinstance(request, Mapping) or operation not in _COUNTED_OPERATIONS:
        return TokenCount(0, False, enc.name, info.known)
    counter = _Counter(enc, exact=True)
    if operation == "completions":
        _count_inputs(counter, request.get("prompt"))
    elif operation == "embeddings":
        _count_inputs(counter, request.get("input"))
    else:
        _count_responses(counter, request)
    return counter.result(info)


@functools.cache
def _longest_token_chars(encoding: str) -> int:
    """The most characters one token of ``encoding`` can stand for: its longest token in
    bytes (a character is at least one byte)."""
    ranks = get_encoding(encoding)._mergeable_ranks  # the vocabulary, as its file gives it
    return max(len(token) for token in ranks)


def proven_tokens(operation: str, request: Mapping[str, Any], encoding: str) -> int:
    """The fewest prompt tokens a request shrunk by :func:`~aoai_helpers.core.shrink.shrink_request` can have had (0 for
    a request that was not shrunk)."""
    stats = request.get(MARKER)
    if not isinstance(stats, Mapping):
        return 0
    items = _whole(stats.get("items"))
    strings = _whole(stats.get("strings"))
    chars = _whole(stats.get("chars"))
    by_structure = strings + (3 * items + 3 if operation == "chat" else 0)
    by_text = math.ceil(chars / _longest_token_chars(encoding)) if chars else 0
    return max(by_structure, by_text)


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
