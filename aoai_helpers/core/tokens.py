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
Formats`` section; a completion's tool calls are what the model writes (``render_calls``)
plus :func:`call_framing`; calls read back in a prompt have their arguments compacted, 2 tokens
of framing, and their results under the role ``functions.NAME``; a forced call's name is the
prompt's (:mod:`aoai_helpers.core.decoding`). The walk over a request is
:mod:`aoai_helpers.core.prompt_counter`.

How sure a count is (:attr:`TokenCount.quality`, the ``EstimateQuality`` column): ``exact`` for
the shapes the captures prove (text chats without names, flat tool definitions, completions
and embeddings of a known model); ``lower_bound`` when something is opaque (Responses
``reasoning`` / ``compaction`` items — items before a compaction are replaced by it — item
references, ``previous_response_id`` / ``conversation``, built-in tools, a shrunk request, a
reasoning model given function tools), for
a reasoning model's output (hidden reasoning), output decoded under a constraint (strict
schemas, chat's ``tool_choice: "required"``), Responses calls of the API's first weeks (before
:data:`~aoai_helpers.core.chat_format.RESPONSES_PLAIN_SINCE`) and when no output was seen
(``prompt_only``);
``approximate`` otherwise (content parts — images 85 at ``detail: low``, else 765; audio and
files 0 —, names, tool calls and results, response formats, the Responses API, unknown models).

Nothing here raises for a malformed request: counting is best effort over arbitrary JSON.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import tiktoken

from aoai_helpers.core.chat_format import (
    PER_MESSAGE_0301,
    PER_NAME_0301,
    REASONING_PRIMING,
    REPLY_PRIMING,
    RESPONSES_PLAIN_SINCE,
    UNPROVEN_CHAT_MODELS,
    call_framing,
    completion_framing,
)
from aoai_helpers.core.decoding import FORCED_CALL_FRAME, constrained_output, forced_function
from aoai_helpers.core.model_names import ModelInfo, normalize_model
from aoai_helpers.core.prompt_counter import (
    PromptCounter,
    as_text,
    count_inputs,
    count_responses,
    count_tokens,
    has_system,
    reasoning_with_tools,
)
from aoai_helpers.core.shrink import MARKER
from aoai_helpers.core.tokenizer_files import (
    DATA_DIR,
    ENCODING_NAMES,
    PINNED_SHA256,
    get_encoding,
    load_encoding,
    verify_tokenizer_files,
)
from aoai_helpers.core.tool_schema import render_calls

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
    "count_completion",
    "count_completion_text",
    "count_prompt",
    "count_text",
    "encoding_for_model",
    "forced_prefix",
    "get_encoding",
    "load_encoding",
    "proven_tokens",
    "verify_tokenizer_files",
]

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


def count_text(text: str, model: str | None) -> int:
    """Number of tokens of ``text`` for ``model``; special-token text is treated as plain text."""
    enc, _ = encoding_for_model(model)
    return count_tokens(enc, as_text(text))


def count_completion_text(texts: Iterable[str], model: str | None) -> int:
    """Sum of the tokens of each choice's text (reassembled streamed output); ``None`` skipped."""
    enc, _ = encoding_for_model(model)
    return sum(count_tokens(enc, as_text(t)) for t in texts if t is not None)


def completion_quality(
    model: str | None,
    prompt_quality: str,
    operation: str = "chat",
    request: Mapping[str, Any] | None = None,
) -> str:
    """How sure a prompt + visible-output estimate is: a lower bound for a reasoning model (its
    hidden reasoning is billed, not seen), after a lower-bound prompt, or for output decoded
    under a constraint (:func:`~aoai_helpers.core.decoding.constrained_output`); else an
    approximation — real captures bill a chat's text reply one token above its text in 11 of 55
    (20 %), with no rule that tells when (``benchmarks/accuracy.py``)."""
    _, info = encoding_for_model(model)
    if info.reasoning or prompt_quality == LOWER_BOUND:
        return LOWER_BOUND
    if constrained_output(operation, request):
        return LOWER_BOUND
    return APPROXIMATE


def forced_prefix(operation: str, request: Mapping[str, Any] | None, encoding: str) -> int:
    """Tokens of a forced call (:func:`~aoai_helpers.core.decoding.forced_function`) that the
    API writes into the prompt: what the call would cost as a completion, less the arguments
    and :data:`~aoai_helpers.core.decoding.FORCED_CALL_FRAME` (0 when no call is forced)."""
    name = forced_function(operation, request)
    if name is None:
        return 0
    written = count_tokens(get_encoding(encoding), render_calls([(name, "")]))
    framing = completion_framing(operation, True, [""], [1], encoding)
    return written + framing - FORCED_CALL_FRAME


def count_completion(
    operation: str,
    request: Mapping[str, Any] | None,
    model: str | None,
    texts: Sequence[str],
    calls: Sequence[int] = (),
) -> int:
    """A completion's tokens from its visible output: each choice's text (content, then its
    tool calls as :func:`~aoai_helpers.core.tool_schema.render_calls` writes them) plus the
    framing the API bills (:func:`~aoai_helpers.core.chat_format.completion_framing`); a forced
    call's name and framing are the prompt's (:func:`forced_prefix`)."""
    enc, _ = encoding_for_model(model)
    has_tools = isinstance(request, Mapping) and bool(
        request.get("tools") or request.get("functions")
    )
    total = count_completion_text(texts, model)
    total += completion_framing(operation, has_tools, texts, calls, enc.name)
    prefix = forced_prefix(operation, request, enc.name)
    if prefix:
        total -= prefix * sum(1 for _, made in zip(texts, calls, strict=False) if made == 1)
    return max(total, 0)


def _result(counter: PromptCounter, info: ModelInfo) -> TokenCount:
    exact = counter.exact and info.known
    return TokenCount(
        counter.tokens, exact, counter.enc.name, info.known, counter.lower and not exact
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
    counter = PromptCounter(enc, exact=True, has_system=has_system(messages))
    if isinstance(model, str) and info.name == "gpt-35-turbo" and "0301" in model:
        counter.per_message, counter.per_name = PER_MESSAGE_0301, PER_NAME_0301
    counter.functions(request.get("tools"))
    counter.functions(request.get("functions"))
    reasoning_with_tools(counter, info)
    counter.response_format(request.get("response_format"))
    search = "web_search_options" in request or info.name.endswith("-search-preview")
    if search and isinstance(messages, list):  # search models drop system messages (captures)
        messages = [m for m in messages if not has_system([m])]
    counter.messages(messages)
    if info.reasoning or search:
        counter.tokens += REASONING_PRIMING - REPLY_PRIMING
    if search or info.name in UNPROVEN_CHAT_MODELS:
        counter.exact = False  # search models and o1-mini / o1-preview add prompt of their own
    counter.tokens += forced_prefix("chat", request, enc.name)
    return _result(counter, info)


def count_prompt(
    operation: str,
    request: Mapping[str, Any] | None,
    model: str | None,
    when: datetime | None = None,
) -> TokenCount:
    """Count the prompt tokens of a request for ``operation``, made at ``when`` (if known).

    ``operation`` is ``chat`` | ``completions`` | ``embeddings`` | ``responses`` | ``other``.
    ``other`` (or a missing request) counts 0 tokens, not exact. Responses API counts are
    always estimates; before :data:`RESPONSES_PLAIN_SINCE` they are lower bounds.
    """
    if isinstance(request, Mapping) and isinstance(request.get(MARKER), Mapping):
        # a request shrunk to fit the event: never below what its recorded size proves
        unshrunk = {k: v for k, v in request.items() if k != MARKER}
        counted = count_prompt(operation, unshrunk, model, when)
        floor = proven_tokens(operation, request, counted.encoding)
        tokens = max(counted.tokens, floor)
        return TokenCount(tokens, False, counted.encoding, counted.model_known, True)
    if operation == "chat":
        return count_chat_prompt(request, model)
    enc, info = encoding_for_model(model)
    if not isinstance(request, Mapping) or operation not in _COUNTED_OPERATIONS:
        return TokenCount(0, False, enc.name, info.known)
    counter = PromptCounter(enc, exact=True)
    if operation == "completions":
        count_inputs(counter, request.get("prompt"))
    elif operation == "embeddings":
        count_inputs(counter, request.get("input"))
    else:
        count_responses(counter, request, info)
        counter.tokens += forced_prefix("responses", request, enc.name)
        if isinstance(when, datetime) and _utc(when) < RESPONSES_PLAIN_SINCE:
            counter.opaque()  # the API's first weeks added input the request does not hold
    return _result(counter, info)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@functools.cache
def _longest_token_chars(encoding: str) -> int:
    """The most characters one token of ``encoding`` can stand for: its longest token in
    bytes (a character is at least one byte)."""
    ranks = get_encoding(encoding)._mergeable_ranks  # the vocabulary, as its file gives it
    return max(len(token) for token in ranks)


def proven_tokens(operation: str, request: Mapping[str, Any], encoding: str) -> int:
    """The fewest prompt tokens a request shrunk by
    :func:`~aoai_helpers.core.shrink.shrink_request` can have had (0 for one not shrunk)."""
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
