"""The chat format's framing, as the API counts it: constants fitted on real captures.

Every number here was read off real request / response pairs of other projects
(``tests/data/captures``, ``benchmarks/accuracy.py``), where the API reported the usage: what a
message, a reply's priming, a block of tool definitions or a tool call costs beyond the text
:mod:`aoai_helpers.core.tool_schema` renders. :mod:`aoai_helpers.core.tokens` counts with them;
the local simulator reports usage with them, as the real API does. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "CL100K_ONE_CALL_FRAME",
    "ECHOED_FIELDS",
    "HISTORY_CALL_FRAME",
    "ONE_CALL_FRAME",
    "PARALLEL_CALLS_FRAME",
    "PER_MESSAGE",
    "PER_MESSAGE_0301",
    "PER_NAME",
    "PER_NAME_0301",
    "REASONING_PRIMING",
    "REPLY_PRIMING",
    "RESPONSES_ONE_CALL_EXTRA",
    "RESPONSES_PLAIN_SINCE",
    "RESPONSES_TOOLS_FRAME",
    "SCHEMA_FRAME",
    "TEXT_REPLY_FRAME",
    "TOOLS_FRAME",
    "TOOLS_IN_SYSTEM",
    "UNPROVEN_CHAT_MODELS",
    "call_framing",
    "completion_framing",
]

PER_MESSAGE: Final = 3
PER_NAME: Final = 1
REPLY_PRIMING: Final = 3
#: gpt-35-turbo-0301's older chat format (the cookbook): 4 per message, a name replaces the role.
PER_MESSAGE_0301: Final = 4
PER_NAME_0301: Final = -1
#: Message fields a response has that clients echo back; the model never reads them.
ECHOED_FIELDS: Final = frozenset({"annotations", "refusal", "audio", "reasoning_content", "id"})
#: Reasoning models (o-series, GPT-5) prime the reply with one token fewer (real captures).
REASONING_PRIMING: Final = 2
#: Chat models whose prompts the captures show differ from the rule (an approximation there).
UNPROVEN_CHAT_MODELS: Final = frozenset(
    {"o1-mini", "o1-preview", "gpt-4o-search-preview", "gpt-4o-mini-search-preview"}
)
#: Tokens around the rendered ``namespace functions`` block: its own system message when the
#: chat has none (+3); joined to the chat's system message, one token less than the block (-1).
TOOLS_FRAME: Final = 3
TOOLS_IN_SYSTEM: Final = -1
#: The Responses API's function tools: six tokens fewer than chat's block of its own.
RESPONSES_TOOLS_FRAME: Final = -3
#: The Responses API's first weeks (March 2025) billed input the request does not hold: 18
#: tokens more on a bare prompt, 198-216 more with a function tool (real captures of three
#: projects, gpt-4o); from April 2025 on the same requests count as the rule says. Responses
#: calls made before this are lower bounds.
RESPONSES_PLAIN_SINCE: Final = datetime(2025, 4, 1, tzinfo=UTC)
#: Tokens a completion's tool calls cost beyond their rendered text (:func:`call_framing`).
ONE_CALL_FRAME: Final = 4
PARALLEL_CALLS_FRAME: Final = 6
#: An assistant message's tool calls read back in a later prompt: 2 tokens beyond their
#: rendered text (arguments compacted), one call or several (real captures, 25 of 36 exact).
HISTORY_CALL_FRAME: Final = 2
#: A single tool call written by a cl100k model (GPT-3.5, GPT-4) costs 1 token of framing, not 4.
CL100K_ONE_CALL_FRAME: Final = 1
#: A single function_call output item of the Responses API costs one token more than chat's.
RESPONSES_ONE_CALL_EXTRA: Final = 1
#: A text reply costs one token more when the model could have called a tool instead (chat with
#: tools; the Responses API always): real captures, 17 of 23 and 25 of 27.
TEXT_REPLY_FRAME: Final = 1
#: Tokens around a rendered response-format schema.
SCHEMA_FRAME: Final = 0


def call_framing(calls: int) -> int:
    """Tokens a choice's tool calls cost beyond their rendered text (real captures: +4 for one
    call, +6 for a ``multi_tool_use.parallel`` of several, whatever their number)."""
    if calls <= 0:
        return 0
    return ONE_CALL_FRAME if calls == 1 else PARALLEL_CALLS_FRAME


def completion_framing(
    operation: str,
    has_tools: bool,
    texts: Sequence[str],
    calls: Sequence[int],
    encoding: str = "o200k_base",
) -> int:
    """Tokens a completion costs beyond its rendered text, summed over its choices: a choice's
    tool calls (:func:`call_framing`; 1 for one call of a cl100k model, +1 for one Responses
    ``function_call``), or its text reply where a tool call was possible
    (:data:`TEXT_REPLY_FRAME`)."""
    total = 0
    for index, text in enumerate(texts):
        made = calls[index] if index < len(calls) else 0
        if made == 1 and encoding == "cl100k_base":
            total += CL100K_ONE_CALL_FRAME
        elif made:
            total += call_framing(made)
            total += RESPONSES_ONE_CALL_EXTRA if operation == "responses" and made == 1 else 0
        elif text and (has_tools or operation == "responses"):
            total += TEXT_REPLY_FRAME
    return total
