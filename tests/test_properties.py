"""Property tests: whatever arrives, parsing and usage resolution return values, never raise.

One bad event must never kill a batch (issue: "a clear error value, not an exception"), and a
resolved usage must always be storable (non-negative SQL ints, totals that add up).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aoai_helpers.core.events import V2_FIELDS, EventError, UsageEvent, parse_event
from aoai_helpers.core.sse import iter_sse
from aoai_helpers.core.usage import resolve_usage, summarize_stream
from aoai_helpers.synthetic.events import v2_reported_events

_MAX_INT = 2**31 - 1
_BASE = next(v2_reported_events(1, seed=5))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_resolved(event: UsageEvent) -> None:
    resolved = resolve_usage(event)
    usage = resolved.usage
    counts = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    )
    assert all(isinstance(n, int) and 0 <= n <= _MAX_INT for n in counts), counts
    assert resolved.source in {"reported", "estimated", "prompt_only", "unbilled"}
    if resolved.source in {"estimated", "prompt_only"}:
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if resolved.source == "prompt_only":
        assert usage.completion_tokens == 0
    if resolved.source == "unbilled":
        assert counts == (0, 0, 0, 0, 0)


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_give_an_event_or_an_error_value(body: bytes) -> None:
    parsed = parse_event(body)
    assert isinstance(parsed, UsageEvent | EventError)
    if isinstance(parsed, EventError):
        assert parsed.raw == body and parsed.reason


@FAST
@given(st.sampled_from(V2_FIELDS), json_values)
def test_a_v2_event_with_any_one_field_replaced_parses_or_is_set_aside(
    field: str, value: Any
) -> None:
    event = dict(_BASE, **{field: value})
    body = json.dumps(event).encode()
    parsed = parse_event(body)
    assert isinstance(parsed, UsageEvent | EventError)
    if isinstance(parsed, UsageEvent):
        _check_resolved(parsed)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "ExecTimeUTC",
                "OperationId",
                "Request",
                "ResponseString",
                "SubscriptionId",
                "UserEmail",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_v1_shaped_object_parses_and_resolves_or_is_set_aside(fields: dict[str, Any]) -> None:
    fields.setdefault("ExecTimeUTC", "2026-11-05 10:00:00")
    fields.setdefault("OperationId", "ChatCompletions_Create")
    parsed = parse_event(json.dumps(fields).encode())
    assert isinstance(parsed, UsageEvent | EventError)
    if isinstance(parsed, UsageEvent):
        _check_resolved(parsed)


sse_lines = st.lists(
    st.one_of(
        st.just("data: [DONE]"),
        st.just(""),
        st.text(max_size=40).map(lambda t: "data: " + t),
        json_values.map(lambda v: "data: " + json.dumps(v)),
        st.sampled_from(["event: response.completed", ": keep-alive", "data: {", "id: 1"]),
    ),
    max_size=12,
)


@FAST
@given(sse_lines, st.sampled_from(["\n", "\r\n"]))
def test_any_stream_text_summarises_without_raising(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    list(iter_sse(text))
    summary = summarize_stream(text)
    assert summary.chunks >= 0 and summary.bad_lines >= 0
    if summary.usage is not None:
        assert 0 <= summary.usage.prompt_tokens <= _MAX_INT
