"""What the API decides about a reply before the model writes it: forced calls, constrained output.

Two request settings change how a reply's tokens are billed, and both are read here from the
request alone (pure; no I/O). Facts from real captures of other projects
(``tests/data/captures``, ``benchmarks/accuracy.py``):

- **A forced function** (``tool_choice`` naming a function; on the Responses API also
  ``"required"`` with one function tool): the API writes the call's name and framing into the
  prompt, the model writes only the arguments — its completion is the arguments plus
  :data:`FORCED_CALL_FRAME`; the prompt holds the rest (:func:`forced_function`). Three
  captures (cl100k and o200k, chat and Responses) agree.
- **Constrained output** (a ``strict`` JSON schema as ``response_format`` / ``text.format``;
  chat's ``tool_choice: "required"``): decoding under a grammar may split text into more tokens
  than the canonical tokenisation counts, never fewer — in 21 captures the reported figure is
  never below the count, up to 13 tokens above it. A count is then a lower bound
  (:func:`constrained_output`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aoai_helpers.core.tool_schema import function_of, json_schema_spec

__all__ = ["FORCED_CALL_FRAME", "constrained_output", "forced_function"]

#: A forced call's completion: its arguments and one token (real captures, 3 of 3).
FORCED_CALL_FRAME: Final = 1


def _single_function(request: Mapping[str, Any]) -> str | None:
    tools = request.get("tools")
    if not isinstance(tools, list) or len(tools) != 1:
        return None
    fn = function_of(tools[0])
    name = fn.get("name") if fn is not None else None
    return name if isinstance(name, str) and name else None


def forced_function(operation: str, request: Mapping[str, Any] | None) -> str | None:
    """The function the request makes the model call, by name (``None``: the model chooses).

    Chat: ``{"type": "function", "function": {"name": N}}``; Responses: ``{"type":
    "function", "name": N}``, or ``"required"`` with a single function tool."""
    if not isinstance(request, Mapping) or operation not in ("chat", "responses"):
        return None
    choice = request.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in (None, "function"):
        inner = choice.get("function")
        spec = inner if isinstance(inner, Mapping) else choice
        name = spec.get("name")
        return name if isinstance(name, str) and name else None
    if operation == "responses" and choice == "required":
        return _single_function(request)
    return None


def _strict_schema(fmt: Any) -> bool:
    spec = json_schema_spec(fmt)
    return spec is not None and spec.get("strict") is True


def constrained_output(operation: str, request: Mapping[str, Any] | None) -> bool:
    """Whether the reply is decoded under a constraint (its count is then a lower bound)."""
    if not isinstance(request, Mapping):
        return False
    if operation == "chat":
        return _strict_schema(request.get("response_format")) or (
            request.get("tool_choice") == "required"
        )
    if operation == "responses":
        text = request.get("text")
        return isinstance(text, Mapping) and _strict_schema(text.get("format"))
    return False
