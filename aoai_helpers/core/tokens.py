"""Offline tokenizer and prompt / completion token counting (docs/architecture.md).

The two tiktoken vocabularies the billed models use ship with the package
(``data/tokenizers/{o200k_base,cl100k_base}.tiktoken``). They are read from there, checked
against the sha256 tiktoken itself pins (:data:`PINNED_SHA256`) and turned into
:class:`tiktoken.Encoding` objects here; ``tiktoken.get_encoding`` is never called, so tiktoken
never attempts a download and never writes to its cache directory.

Counting rules (fitted on real captures of other projects, ``tests/data/captures``;
``benchmarks/accuracy.py`` prints how close they come per shape): chat messages cost 3 tokens
each plus their string values, 1 more per ``name``, 3 to prime the reply — 2 for reasoning
models (o-series, GPT-5). Function tools are the ``namespace functions`` block of
:mod:`aoai_helpers.core.tool_schema` (+3 as a system message of its own, -1 joined to the chat's
system message, -3 on the Responses API); a ``json_schema`` format is its ``# Response
Formats`` section; tool calls, in a prompt or a completion, are what the model writes
(``render_calls``) plus :func:`call_framing`.

How sure a count is (:attr:`TokenCount.quality`, the ``EstimateQuality`` column): ``exact`` for
the shapes the captures prove (text chats without names, flat tool definitions, completions
and embeddings of a known model); ``lower_bound`` when something is opaque (Responses
``reasoning`` / ``compaction`` items — items before a compaction are replaced by it — item
references, ``previous_response_id`` / ``conversation``, built-in tools, a shrunk request), for
a reasoning model's output (hidden reasoning) and when no output was seen (``prompt_only``);
``approximate`` otherwise (content parts — images 85 at ``detail: low``, else 765; audio and
files 0 —, names, tool calls and results, response formats, the Responses API, unknown models).

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

from aoai_helpers.core.chat_format import (
    ECHOED_FIELDS,
    PER_MESSAGE,
    PER_MESSAGE_0301,
    PER_NAME,
    PER_NAME_0301,
    REASONING_PRIMING,
    REPLY_PRIMING,
    RESPONSES_TOOLS_FRAME,
    SCHEMA_FRAME,
    TOOLS_FRAME,
    TOOLS_IN_SYSTEM,
    UNPROVEN_CHAT_MODELS,
    call_framing,
)
from aoai_helpers.core.model_names import ModelInfo, normalize_model
from aoai_helpers.core.shrink import MARKER
from aoai_helpers.core.tokenizer_files import (
    DATA_DIR,
    ENCODING_NAMES,
    PINNED_SHA256,
    get_encoding,
    load_encoding,
    verify_tokenizer_files,
)
from aoai_helpers.core.tool_schema import (
    function_of,
    proven_function,
    render_calls,
    render_functions,
    schema_section,
    undescribed_properties,
)

__all__ = [
    "APPROXIMATE",
    "DATA_DIR",
    "ENCODING_NAMES",
    "EXACT",
    "LOWER_BOUND",
    "PINNED_SHA256",
    "TokenCount",
    "call_framing",
    "completion_quality",
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

# Image estimates (a 1024x1024 image at high detail: 85 base + 4 tiles x 170).
_IMAGE_LOW: Final = 85
_IMAGE_HIGH: Final = 85 + 4 * 170

_CACHEABLE_LEN: Final = 2048  # only short strings are memoised (system prompts, roles …)
_COUNTED_OPERATIONS: Final = frozenset({"chat", "completions", "embeddings", "responses"})


#: How sure a count is (the ``EstimateQuality`` column): the formula is proven exact on real
#: captures of this shape; an approximation; or a floor (opaque input, hidden reasoning).
EXACT: Final = "exact"
APPROXIMATE: Final = "approximate"
LOWER_BOUND: Final = "lower_bound"


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count, whether it is exact, the encoding used and whether the model was known.

    ``lower_bound`` says the request held something whose tokens cannot be counted here
    (encrypted reasoning, compaction items, a shrunk copy): the true count is at least this.
    """

    tokens: int
    exact: bool
    encoding: str
    model_known: bool
    lower_bound: bool = False

    @property
    def quality(self) -> str:
        """:data:`EXACT`, :data:`LOWER_BOUND` or :data:`APPROXIMATE`."""
        if self.exact:
            return EXACT
        return LOWER_BOUND if self.lower_bound else APPROXIMATE


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


def completion_quality(model: str | None, prompt_quality: str) -> str:
    """How sure a prompt + visible-output estimate is: a lower bound for a reasoning model (its
    hidden reasoning is billed, not seen) or after a lower-bound prompt; else an approximation
    — real captures count a text reply one token above its text about a third of the time,
    with no rule that tells when (``benchmarks/accuracy.py``)."""
    _, info = encoding_for_model(model)
    if info.reasoning or prompt_quality == LOWER_BOUND:
        return LOWER_BOUND
    return APPROXIMATE


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

    __slots__ = (
        "enc",
        "exact",
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

    def opaque(self) -> None:
        """Something is in the request whose tokens cannot be counted: the count is a floor."""
        self.exact = False
        self.lower = True

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

    def tool_calls(self, calls: list[Any]) -> None:
        """An assistant message's tool calls, as the model wrote them (:func:`render_calls`)."""
        self.exact = False
        rendered = []
        for call in calls:
            fn = call.get("function", call) if isinstance(call, Mapping) else None
            if not isinstance(fn, Mapping):
                self.text(call)
                continue
            name, args = fn.get("name"), fn.get("arguments")
            rendered.append(
                (_as_text(name or ""), args if isinstance(args, str) else _as_text(args))
            )
        if rendered:
            self.tokens += _count(self.enc, render_calls(rendered)) + call_framing(len(rendered))

    def function_call(self, call: Any) -> None:
        """A Responses ``function_call`` input item: one call, as the model wrote it."""
        self.tool_calls([call])

    def message(self, message: Any) -> None:
        self.tokens += self.per_message
        if not isinstance(message, Mapping):
            self.text(message)
            return
        for key, value in message.items():
            if key == "content":
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

    def messages(self, messages: Any) -> None:
        if not isinstance(messages, list):
            self.exact = False
            messages = [] if messages is None else [messages]
        for message in messages:
            self.message(message)
        self.tokens += REPLY_PRIMING

    def functions(self, tools: Any) -> None:
        """Add the tokens of function definitions (``tools`` or the legacy ``functions``) as
        the model reads them (:func:`~aoai_helpers.core.tool_schema.render_functions`); other
        tools (built-in, custom) as their JSON, an approximation."""
        if tools is None:
            return
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
            frame = self.tools_frame
            undescribed = sum(map(undescribed_properties, functions))
            self.tokens += _count(self.enc, render_functions(functions)) + frame - undescribed
            if not all(map(proven_function, functions)):
                self.exact = False

    def response_format(self, fmt: Any) -> None:
        """A ``json_schema`` response format, as the model reads it (:data:`SCHEMA_FRAME`)."""
        if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
            return
        spec = fmt.get("json_schema", fmt)  # chat: {json_schema: {...}}; Responses: flat
        if not isinstance(spec, Mapping):
            self.exact = False
            return
        self.exact = False  # fitted on few captures: an approximation until proven
        text = schema_section(spec)
        self.tokens += _count(self.enc, text) + SCHEMA_FRAME

    def result(self, info: ModelInfo) -> TokenCount:
        exact = self.exact and info.known
        return TokenCount(self.tokens, exact, self.enc.name, info.known, self.lower and not exact)


def _has_system(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, Mapping) and m.get("role") in ("system", "developer") for m in messages
    )


def count_chat_prompt(request: Mapping[str, Any] | None, model: str | None) -> TokenCount:
    """Count the prompt tokens of a chat-completions request (messages + tools / functions).

    ``exact`` is True only for text-only chats (string content, names, flat function
    parameters) of a known model: the forms the cookbook's counts were verified on.
    """
    enc, info = encoding_for_model(model)
    if not isinstance(request, Mapping):
        return TokenCount(0, False, enc.name, info.known)
    messages = request.get("messages")
    counter = _Counter(enc, exact=True, has_system=_has_system(messages))
    if isinstance(model, str) and info.name == "gpt-35-turbo" and "0301" in model:
        counter.per_message, counter.per_name = PER_MESSAGE_0301, PER_NAME_0301
    counter.functions(request.get("tools"))
    counter.functions(request.get("functions"))
    counter.response_format(request.get("response_format"))
    search = "web_search_options" in request or info.name.endswith("-search-preview")
    if search and isinstance(messages, list):  # search models drop system messages (captures)
        messages = [m for m in messages if not _has_system([m])]
    counter.messages(messages)
    if info.reasoning or search:
        counter.tokens += REASONING_PRIMING - REPLY_PRIMING
    if search or info.name in UNPROVEN_CHAT_MODELS:
        counter.exact = False  # search models and o1-mini / o1-preview add prompt of their own
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


#: Responses API input items the model sees only as opaque, encrypted state.
_OPAQUE_ITEMS: Final = frozenset({"reasoning", "compaction"})


def _live_items(items: list[Any]) -> list[Any]:
    """The input items the model reads: a ``compaction`` item replaces every item before it."""
    last = -1
    for pos, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("type") == "compaction":
            last = pos
    return items[last:] if last >= 0 else items


def _count_responses(counter: _Counter, request: Mapping[str, Any], info: ModelInfo) -> None:
    """The Responses API: tools, ``text.format``, ``instructions`` and the live input items."""
    counter.exact = False
    counter.tools_frame = RESPONSES_TOOLS_FRAME
    counter.functions(request.get("tools"))
    tools = request.get("tools")
    if isinstance(tools, list) and any(function_of(t) is None for t in tools):
        counter.opaque()  # built-in tools (web search, file search …) add input nobody sees
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
    for item in _live_items(items):
        kind = item.get("type") if isinstance(item, Mapping) else None
        if not isinstance(item, Mapping):
            counter.message(item)
        elif kind in _OPAQUE_ITEMS:
            counter.opaque()  # encrypted_content / a compacted history: not text to count
        elif "role" in item:
            counter.message({k: item[k] for k in ("role", "content", "name") if k in item})
        elif kind == "function_call":
            counter.tokens += PER_MESSAGE
            counter.function_call(item)
        elif kind == "function_call_output":
            counter.tokens += PER_MESSAGE
            counter.text(item.get("output"))
        elif kind == "item_reference":
            counter.opaque()  # refers to stored state we cannot see
        else:
            counter.message(item)
    counter.tokens += REASONING_PRIMING if info.reasoning else REPLY_PRIMING


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
        tokens = max(counted.tokens, floor)
        return TokenCount(tokens, False, counted.encoding, counted.model_known, True)
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
        _count_responses(counter, request, info)
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
