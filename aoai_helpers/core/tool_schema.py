"""Tool definitions and JSON schemas as the model reads them: TypeScript-like text.

The chat models see function tools as a ``namespace functions`` of TypeScript type
declarations in their system prompt, and a ``response_format`` JSON schema as a type of its
own; tool calls are written as one ``to=functions.NAME`` call or a ``multi_tool_use.parallel``
of several. :func:`render_functions`, :func:`render_schema` and :func:`render_calls` write that
text — in the prompt and in a completion alike — so its tokens can be counted
(:mod:`aoai_helpers.core.tokens`); the constants that frame it were fitted on real captures (``tests/data/captures``, ``benchmarks/accuracy.py``), not taken from a formula.

Rules: a description becomes a ``// `` comment line above what it describes (a property's
``title`` one more, above it: within a token of real captures, not settled); a property not in
``required`` is optional (``name?: type``); ``string`` / ``number`` / ``integer`` (as
``number``) / ``boolean`` / ``null`` keep their names; ``enum`` / ``const`` values become a
union of JSON literals; ``array`` becomes ``T[]``; an object with properties becomes a nested
``{ … }`` block; ``anyOf`` / ``oneOf`` / a list of types become unions; ``$ref`` and anything
else is ``any``. Pure: no I/O, never raises on odd input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "function_of",
    "history_arguments",
    "json_schema_spec",
    "proven_function",
    "render_calls",
    "render_functions",
    "render_schema",
    "schema_section",
    "undescribed_properties",
]

_SIMPLE: Final = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "null": "null",
}
_MAX_DEPTH: Final = 32


def function_of(tool: Any) -> Mapping[str, Any] | None:
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


def _literal(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return "any"


def _comment(schema: Mapping[str, Any], lines: list[str]) -> None:
    desc = schema.get("description")
    if isinstance(desc, str) and desc:
        lines.extend(f"// {line}" for line in desc.splitlines() or [""])


def _type(schema: Any, depth: int) -> str:
    """The TypeScript type of a JSON schema (one line, or a block for nested objects)."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return "any"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return " | ".join(_literal(v) for v in enum)
    if "const" in schema:
        return _literal(schema["const"])
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return " | ".join(_type(o, depth + 1) for o in options)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_type({**schema, "type": k}, depth + 1) for k in kind) or "any"
    if kind == "array":
        items = _type(schema.get("items"), depth + 1)
        return f"({items})[]" if " | " in items else f"{items}[]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if isinstance(props, Mapping) and props:
            return "{\n" + _properties(schema, depth + 1) + "\n}"
        return "object"
    return _SIMPLE.get(kind, "any") if isinstance(kind, str) else "any"


def _properties(schema: Mapping[str, Any], depth: int) -> str:
    props = schema.get("properties")
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    lines: list[str] = []
    for name, prop in props.items() if isinstance(props, Mapping) else ():
        if isinstance(prop, Mapping):
            title = prop.get("title")
            if isinstance(title, str) and title:  # read, as the captures show (not settled)
                lines.append(f"// {title}")
            _comment(prop, lines)
        mark = "" if name in needed else "?"
        lines.append(f"{name}{mark}: {_type(prop, depth)},")
    return "\n".join(lines)


def _function(fn: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _comment(fn, lines)
    name = fn.get("name")
    name = name if isinstance(name, str) else _literal(name)
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    if isinstance(params, Mapping) and isinstance(props, Mapping) and props:
        lines.append(f"type {name} = (_: {{\n{_properties(params, 1)}\n}}) => any;")
    else:
        lines.append(f"type {name} = () => any;")
    return "\n".join(lines)


def render_functions(functions: Sequence[Mapping[str, Any]]) -> str:
    """The ``namespace functions`` block of the given function definitions."""
    body = "\n\n".join(_function(fn) for fn in functions)
    return (
        f"# Tools\n\n## functions\n\nnamespace functions {{\n\n{body}\n\n}} // namespace functions"
    )


def render_schema(schema: Any) -> str:
    """A ``response_format`` / ``text.format`` JSON schema as one TypeScript type."""
    return _type(schema, 0)


def _json_object(text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def history_arguments(arguments: str) -> str:
    """A tool call's arguments as the model reads them back in a later request: the JSON
    re-serialised compactly (``{"city":"Paris"}`` however the client spaced it; real
    captures), text that is not JSON as it is."""
    text = arguments.strip()
    if not text.startswith(("{", "[")):
        return arguments
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return arguments
    return _compact(value)


def render_calls(calls: list[tuple[str, str]]) -> str:
    """Tool calls as the model emits them: one call is `` to=functions.NAME`` and its
    arguments; several are one ``multi_tool_use.parallel`` call whose JSON lists them (the
    framing tokens beyond this text: :func:`aoai_helpers.core.tokens.call_framing`)."""
    if not calls:
        return ""
    if len(calls) == 1:
        name, args = calls[0]
        return f" to=functions.{name}{args}"
    uses = []
    for name, args in calls:
        parsed = _json_object(args.strip()) if args.strip().startswith("{") else None
        params = parsed if parsed is not None else args
        uses.append({"recipient_name": f"functions.{name}", "parameters": params})
    rendered = json.dumps({"tool_uses": uses}, ensure_ascii=False, separators=(",", ":"))
    return f"multi_tool_use.parallel{rendered}"


#: JSON-schema keys of a property within the shapes the captures prove the rendering on.
_PROVEN_PROPERTY_KEYS: Final = frozenset({"type", "description", "enum"})
_PROVEN_TYPES: Final = frozenset({"string", "number", "integer", "boolean"})


def _properties_of(fn: Mapping[str, Any]) -> Mapping[str, Any]:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    return props if isinstance(props, Mapping) else {}


def undescribed_properties(fn: Mapping[str, Any]) -> int:
    """1 for a function whose properties have no description at all: the real captures count
    one token fewer than its rendering (per such function)."""
    props = [p for p in _properties_of(fn).values() if isinstance(p, Mapping)]
    return int(bool(props) and not any(p.get("description") for p in props))


def proven_function(fn: Mapping[str, Any]) -> bool:
    """Whether a function definition is of the shapes the captures prove exact: flat
    properties of simple types (or enums)."""
    props = _properties_of(fn)
    params = fn.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        return False
    descriptions = [fn.get("description")] + [
        p.get("description") for p in props.values() if isinstance(p, Mapping)
    ]
    if any(isinstance(d, str) and "\n" in d for d in descriptions):
        return False  # multi-line descriptions: rendered in a way the captures do not settle
    for prop in props.values():
        if not isinstance(prop, Mapping) or not _PROVEN_PROPERTY_KEYS.issuperset(prop):
            return False
        if "enum" not in prop and prop.get("type") not in _PROVEN_TYPES:
            return False
    return True


def json_schema_spec(fmt: Any) -> Mapping[str, Any] | None:
    """The schema spec of a ``json_schema`` response format — chat nests it
    (``{"type": "json_schema", "json_schema": {...}}``), the Responses API's ``text.format``
    is flat — or ``None`` (another format, or no spec to read)."""
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema", fmt)
    return spec if isinstance(spec, Mapping) else None


def schema_section(spec: Mapping[str, Any]) -> str:
    """The response-format section of a JSON schema: its name, description and the schema as
    compact JSON — in strict mode less ``additionalProperties`` and a ``required`` that lists
    the properties in their order, which strict mode implies (real captures: with them the
    count is 6-58 tokens too high; a ``required`` in another order is counted)."""
    name = spec.get("name") or "response"
    lines = [
        "# Response Formats",
        "",
        f"## {name if isinstance(name, str) else _literal(name)}",
        "",
    ]
    desc = spec.get("description")
    if isinstance(desc, str) and desc:
        lines.append(f"// {desc}")
    schema = spec.get("schema", {})
    if spec.get("strict") is True:
        schema = _strict_view(schema, 0)
    lines.append(_compact(schema))
    return "\n".join(lines)


def _strict_view(schema: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return schema
    if isinstance(schema, Mapping):
        props = schema.get("properties")
        implied = isinstance(props, Mapping) and schema.get("required") == list(props)
        return {
            k: _strict_view(v, depth + 1)
            for k, v in schema.items()
            if k != "additionalProperties" and not (k == "required" and implied)
        }
    if isinstance(schema, list):
        return [_strict_view(v, depth + 1) for v in schema]
    return schema


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return "{}"
