"""Usage events: the v2 contract, the v1 (original policy) format, and their parsing.

This module owns the event contract (docs/architecture.md): the ordered v2 field list
(:data:`V2_FIELDS`), the JSON Schema shipped beside it (``schemas/usage-event-v2.schema.json``)
and the parser that turns one raw Event Hubs body into a normalised :class:`UsageEvent`.

Parsing never raises for bad input. :func:`parse_event` returns either a :class:`UsageEvent`
or an :class:`EventError` carrying the reason and the raw body, so a batch can store the good
events and set the bad ones aside (dead letters).

v1 events (no ``EventVersion``, no ``RequestId``) get a deterministic key derived from their
content (:func:`v1_request_id`): redelivering the same v1 body never bills twice. Two v1
events whose bodies are byte-for-byte identical (same second, same caller, same request, no
captured response) therefore count once; v2 events carry APIM's own ``context.RequestId``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson

from aoai_helpers import clock
from aoai_helpers.core.event_fields import (
    CALLER_FIELDS,
    LOG_TO_EVENTHUB_LIMIT,
    OPERATIONS,
    USAGE_FIELDS,
    V1_OPERATION_IDS,
    V2_FIELDS,
    V2_REQUIRED,
    Operation,
)

__all__ = [
    "CALLER_FIELDS",
    "EARLIEST_EXEC_TIME",
    "FUTURE_TOLERANCE",
    "LOG_TO_EVENTHUB_LIMIT",
    "OPERATIONS",
    "USAGE_FIELDS",
    "V1_OPERATION_IDS",
    "V2_FIELDS",
    "EventError",
    "Operation",
    "Usage",
    "UsageEvent",
    "load_v2_schema",
    "operation_from_path",
    "parse_event",
    "v1_request_id",
]

_MAX_INT: Final = 2**31 - 1  # the token columns are SQL ``int``
#: Calls stamped before this (naive UTC) are not calls of this service: dead letters.
EARLIEST_EXEC_TIME: Final = datetime(2020, 1, 1)
#: How far past now a call may be stamped (clock skew between APIM and us); later is
#: implausible (a year 9999 stamp): a dead letter. "Now" is the later of the business clock
#: (``AOAI_NOW``: the local gateway stamps by it) and the system clock (APIM's stamps), so a
#: clock set to another time never turns real calls into dead letters.
FUTURE_TOLERANCE: Final = timedelta(days=1)
_STR_OR_NONE: Final = frozenset({str, type(None)})


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call, normalised from every AOAI response shape.

    ``cached_tokens`` is part of ``prompt_tokens`` and ``reasoning_tokens`` part of
    ``completion_tokens``, as the API reports them.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """The v2 ``Usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass(slots=True)
class UsageEvent:
    """One call as logged by the gateway, normalised across v1 and v2.

    ``usage`` is the usage the *event* reported (v2 ``Usage``); for v1 events it is ``None``
    and :func:`aoai_helpers.core.usage.resolve_usage` reads it from ``response_string``.
    ``exec_time`` is naive UTC.
    """

    request_id: str
    event_version: int
    exec_time: datetime
    gateway_region: str | None
    gateway_service_name: str | None
    subscription_id: str | None
    subscription_name: str | None
    product_name: str | None
    user_name: str | None
    user_email: str | None
    api_name: str | None
    operation_id: str | None
    operation: Operation
    deployment_name: str | None
    api_version: str | None
    is_streaming: bool
    status_code: int | None
    model: str | None
    usage: Usage | None
    request: dict[str, Any] | None
    response_string: str | None


@dataclass(frozen=True, slots=True)
class EventError:
    """A body that could not be parsed into a :class:`UsageEvent`: kept, never dropped."""

    reason: str
    raw: bytes
    request_id: str | None = None


def load_v2_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a v2 event, as shipped in the package."""
    text = (
        Path(__file__).resolve().parents[1] / "schemas" / "usage-event-v2.schema.json"
    ).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def v1_request_id(raw: bytes) -> str:
    """Deterministic idempotency key for a v1 event: ``v1:`` + sha256 of its trimmed body."""
    return "v1:" + hashlib.sha256(raw.strip()).hexdigest()[:40]


def operation_from_path(path: str) -> Operation:
    """The operation a request URL path asks for (classic deployment paths and ``/openai/v1/``)."""
    p = path.split("?", 1)[0].rstrip("/").lower()
    if p.endswith("/chat/completions"):
        return "chat"
    if p.endswith("/completions"):
        return "completions"
    if p.endswith("/embeddings"):
        return "embeddings"
    if p.endswith("/responses") or "/responses/" in p:
        return "responses"
    return "other"


class _Invalid(Exception):
    """Internal: a field failed validation (turned into an EventError)."""


def parse_event(raw: bytes | str) -> UsageEvent | EventError:
    """Parse one Event Hubs body (UTF-8 JSON) into a :class:`UsageEvent`, or say why not."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return EventError(_json_failure(data, exc), data)
    if not isinstance(obj, dict):
        return EventError(f"not a JSON object (got {type(obj).__name__})", data)
    try:
        if b"\\u0000" in data:  # JSON can carry U+0000 only escaped: rare, so checked only then
            _refuse_nul(obj)
        if "EventVersion" in obj:
            return _parse_v2(obj)
        if "RequestId" in obj:
            raise _Invalid(
                "has RequestId but no EventVersion (v2 events must carry EventVersion 2)"
            )
        return _parse_v1(obj, data)
    except _Invalid as exc:
        rid = obj.get("RequestId")
        usable = isinstance(rid, str) and rid and "\x00" not in rid and len(rid) <= 64
        return EventError(str(exc), data, rid if usable else None)


def _refuse_nul(obj: dict[str, Any]) -> None:
    """SQL text columns cannot hold U+0000 (PostgreSQL refuses it): name the first such field."""
    for key, value in obj.items():
        if isinstance(value, str) and "\x00" in value:
            raise _Invalid(f"{key} contains a NUL character (U+0000)")


def _json_failure(data: bytes, exc: Exception) -> str:
    if not data.strip():
        return "empty body"
    size = len(data)
    try:
        data.decode("utf-8")
        bad_utf8_at = None
    except UnicodeDecodeError as ude:
        bad_utf8_at = ude.start
    # Cut by the logger: at the limit, and the body only goes wrong at its very end (the JSON
    # is unfinished, or the cut split a multi-byte character).
    at_limit = LOG_TO_EVENTHUB_LIMIT - 16 <= size <= LOG_TO_EVENTHUB_LIMIT + 16
    ends_early = (
        getattr(exc, "pos", 0) >= size - 4 if bad_utf8_at is None else bad_utf8_at >= size - 4
    )
    if at_limit and ends_early:
        return (
            f"truncated: {size} bytes, at the 200 KB log-to-eventhub limit "
            "(the policy logged too much; v2 events omit prompt text by default)"
        )
    big = f"; {size} bytes" if size >= LOG_TO_EVENTHUB_LIMIT - 16 else ""
    if bad_utf8_at is not None:
        return f"not UTF-8 (invalid byte at {bad_utf8_at} of {size})"
    return f"not JSON ({exc}{big})"


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return value
    if isinstance(value, str):
        return value
    raise _Invalid(f"{key} must be a string or null, not {type(value).__name__}")


def _strings(obj: dict[str, Any], keys: tuple[str, ...]) -> list[str | None]:
    """The values of ``keys``, each a string or None (else :class:`_Invalid` naming the key)."""
    values: list[str | None] = list(map(obj.get, keys))
    if not set(map(type, values)) <= _STR_OR_NONE:  # C-level check; the loop names the culprit
        for key, value in zip(keys, values, strict=True):
            if value is not None and type(value) is not str:
                raise _Invalid(f"{key} must be a string or null, not {type(value).__name__}")
    return values


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{key} must be an integer, not {type(value).__name__}")
    if value < 0 or value > _MAX_INT:
        raise _Invalid(f"{key} out of range: {value}")
    return value


def _time(value: Any, key: str = "ExecTimeUTC") -> datetime:
    """``value`` as naive UTC, in the plausible range (:func:`_plausible`)."""
    if type(value) is str and value.endswith("Z"):
        try:  # the v2 form (…Z): parse as naive UTC, no timezone conversion needed
            fast = datetime.fromisoformat(value[:-1])
        except ValueError:
            fast = None
        if fast is not None and fast.tzinfo is None:
            return _plausible(fast, value, key)
        raise _Invalid(f"{key} is not an ISO 8601 time: {value[:40]!r}")
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string, not {type(value).__name__}")
    try:
        ts = datetime.fromisoformat(value)
        if ts.tzinfo is not None:
            ts = ts.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        raise _Invalid(f"{key} is not an ISO 8601 time in range: {value[:40]!r}") from None
    return _plausible(ts, value, key)


class _Bound:
    """The latest plausible call time last computed, and the ``AOAI_NOW`` it was computed
    under: a time at or before it needs no clock read (the clocks only move forward; a changed
    ``AOAI_NOW`` — set back, say — computes it again)."""

    env: str | None = None
    latest: datetime = datetime.min


_bound = _Bound()


def _plausible(ts: datetime, value: str, key: str) -> datetime:
    """``ts`` unless it is before :data:`EARLIEST_EXEC_TIME` or more than
    :data:`FUTURE_TOLERANCE` after now (then the event is a dead letter)."""
    if ts < EARLIEST_EXEC_TIME:
        raise _Invalid(
            f"{key} is implausible: {value[:40]!r} is before {EARLIEST_EXEC_TIME:%Y-%m-%d}"
        )
    if ts <= _bound.latest and _bound.env == os.environ.get(clock.ENV_VAR):
        return ts  # within a bound taken earlier under the same clock setting (it only grows)
    latest = max(clock.utcnow(), clock.system_utcnow()) + FUTURE_TOLERANCE
    _bound.env, _bound.latest = os.environ.get(clock.ENV_VAR), latest
    if ts > latest:
        raise _Invalid(
            f"{key} is implausible: {value[:40]!r} is more than a day after now"
            f" ({latest - FUTURE_TOLERANCE:%Y-%m-%dT%H:%M:%SZ})"
        )
    return ts


def _usage(value: Any) -> Usage | None:
    """The v2 ``Usage`` object: each count a non-negative SQL int, ``null`` (or ``-0``,
    ``0.0``) meaning 0; the total at least prompt + completion (``max`` of the two: a total
    reported below its parts would bill and allocate fewer tokens than were used); the other
    counts as reported."""
    if value is None or value == {}:
        return None  # {}: nothing reported (not "zero tokens")
    if not isinstance(value, dict):
        raise _Invalid(f"Usage must be an object or null, not {type(value).__name__}")
    get = value.get
    counts: list[Any] = [
        get("prompt_tokens"),
        get("completion_tokens"),
        get("total_tokens"),
        get("cached_tokens"),
        get("reasoning_tokens"),
    ]
    for i, n in enumerate(counts):
        if n is None:
            counts[i] = 0
        elif type(n) is not int or n < 0 or n > _MAX_INT:
            if type(n) is float and n == 0:  # -0.0 and 0.0 (JSON -0 is already the int 0)
                counts[i] = 0
                continue
            _int(n, f"Usage.{USAGE_FIELDS[i]}")  # raises with the reason
    prompt, completion, total, cached, reasoning = counts  # all ints now
    total = max(total, prompt + completion)
    if total > _MAX_INT:
        raise _Invalid(f"Usage.total_tokens out of range (prompt + completion): {total}")
    return Usage(prompt, completion, total, cached, reasoning)


def _request(obj: dict[str, Any]) -> dict[str, Any] | None:
    value = obj.get("Request")
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        # Some deployments log the body as a string; accept it when it holds an object.
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _Invalid("Request is a string that is not JSON") from None
        if isinstance(parsed, dict):
            return parsed
    raise _Invalid(f"Request must be an object or null, not {type(value).__name__}")


_V2_STRINGS: Final = (*CALLER_FIELDS, "DeploymentName", "ApiVersion", "Model", "ResponseString")


def _v2_keys(obj: dict[str, Any]) -> tuple[str, Operation, bool, int]:
    """RequestId, Operation, IsStreaming and StatusCode of a v2 event, checked (inline: the hot
    path; slow messages only on failure)."""
    get = obj.get
    request_id, operation, streaming, status = (
        get("RequestId"),
        get("Operation"),
        get("IsStreaming"),
        get("StatusCode"),
    )
    if (
        request_id is None
        or operation is None
        or streaming is None
        or status is None
        or get("ExecTimeUTC") is None
    ):
        missing = [k for k in V2_REQUIRED if get(k) is None]
        raise _Invalid("missing field(s): " + ", ".join(missing))
    if type(request_id) is not str or not request_id.strip() or len(request_id) > 64:
        raise _Invalid("RequestId must be a non-empty string of at most 64 characters")
    if operation not in OPERATIONS:
        raise _Invalid(
            f"Operation must be one of {', '.join(OPERATIONS)}, not {str(operation)[:40]!r}"
        )
    if type(streaming) is not bool:
        raise _Invalid(f"IsStreaming must be true or false, not {type(streaming).__name__}")
    if type(status) is not int or not 100 <= status <= 599:
        raise _Invalid(f"StatusCode must be an HTTP status code, not {status!r}")
    return request_id, operation, streaming, status


def _parse_v2(obj: dict[str, Any]) -> UsageEvent:
    # Hot path (runs per event at ingest): type checks inline, slow messages only on failure.
    version = obj["EventVersion"]
    if version != 2 or isinstance(version, bool):
        raise _Invalid(
            f"unsupported EventVersion {version!r} (this version reads 2, or v1 without EventVersion)"
        )
    request_id, operation, streaming, status = _v2_keys(obj)
    get = obj.get
    strings = _strings(obj, _V2_STRINGS)
    (
        region,
        service,
        sub_id,
        sub_name,
        product,
        user,
        email,
        api,
        op_id,
        deployment,
        api_version,
        model,
        response,
    ) = strings
    request = get("Request")
    return UsageEvent(
        request_id.strip(),
        2,
        _time(get("ExecTimeUTC")),
        region,
        service,
        sub_id,
        sub_name,
        product,
        user,
        email,
        api,
        op_id,
        operation,
        deployment,
        api_version,
        streaming,
        status,
        model,
        _usage(get("Usage")),
        request if request is None or type(request) is dict else _request(obj),
        response,
    )


def _parse_v1(obj: dict[str, Any], raw: bytes) -> UsageEvent:
    get = obj.get
    exec_time, op_id = get("ExecTimeUTC"), get("OperationId")
    if exec_time is None or op_id is None:
        missing = [k for k in ("ExecTimeUTC", "OperationId") if get(k) is None]
        raise _Invalid("v1 event missing field(s): " + ", ".join(missing))
    region, service, sub_id, sub_name, product, user, email, api, op_name = _strings(
        obj, CALLER_FIELDS
    )
    op_id = op_name or ""
    operation: Operation = V1_OPERATION_IDS.get(op_id.lower(), "other")
    request = get("Request")
    if request is not None and type(request) is not dict:
        request = _request(obj)
    stream = request.get("stream") if request else None
    is_streaming = stream is True or (isinstance(stream, str) and stream.lower() == "true")
    model = request.get("model") if request else None
    response = get("ResponseString")
    if response is not None and type(response) is not str:
        raise _Invalid(f"ResponseString must be a string or null, not {type(response).__name__}")
    return UsageEvent(
        v1_request_id(raw),
        1,
        _time(exec_time),
        region,
        service,
        sub_id,
        sub_name,
        product,
        user,
        email,
        api,
        op_id,
        operation,
        None,  # DeploymentName: not in v1 events
        None,  # ApiVersion
        is_streaming,
        200,  # the original policy logged only 200 responses
        model if isinstance(model, str) and model else None,
        None,  # usage: read from ResponseString by aoai_helpers.core.usage
        request,
        response,
    )
