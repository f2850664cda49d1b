"""The simulator's Responses API beyond text: function calls, reasoning items, encrypted input.

Read with the real ``openai`` SDK (strict response validation where it applies) and with the
project's own stream reassembly (:func:`aoai_helpers.core.usage.summarize_stream`). The
simulator bills with the rules fitted on real captures — the same functions the estimator
counts with, so where the two agree these tests check the shapes and the reassembly, not the
rules (``tests/test_estimates.py`` checks those against captures); where the real API bills
what no request shows (hidden reasoning, encrypted input items), the simulator bills it too and
the estimator's count must stay a floor.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from test_simulator import KEY, client_for, live  # noqa: F401  (live: a module fixture)

from aoai_helpers.core.decoding import FORCED_CALL_FRAME
from aoai_helpers.core.tokens import count_completion, count_prompt, count_text
from aoai_helpers.core.usage import summarize_stream
from aoai_helpers.local.replies import make_plan
from aoai_helpers.local.simulator import Simulator

CITY_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_city",
    "description": "Where a landmark is.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
NAMED: dict[str, Any] = {"type": "function", "name": "get_city"}
#: A Responses request whose one function tool the model may be made to call.
ASK_CITY: dict[str, Any] = {
    "model": "gpt-4o",
    "input": "Where is the Eiffel Tower?",
    "tools": [CITY_TOOL],
}


@pytest.mark.parametrize("kind", ["azure", "v1"])
@pytest.mark.parametrize("choice", [NAMED, "required"])
def test_a_forced_function_call_is_a_function_call_item(
    live: tuple[Simulator, str],  # noqa: F811
    kind: str,
    choice: Any,
) -> None:
    sim, url = live
    request = ASK_CITY | {"tool_choice": choice}
    with client_for(kind, url, _strict_response_validation=True) as strict:
        r = strict.responses.create(**request)
    [call] = r.output
    assert call.type == "function_call" and call.name == "get_city" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert set(json.loads(call.arguments)) == {"city", "days"}
    # a forced call: its name and framing are the prompt's, the model writes the arguments
    assert r.usage is not None
    assert r.usage.output_tokens == count_text(call.arguments, "gpt-4o") + FORCED_CALL_FRAME
    assert r.usage.input_tokens == count_prompt("responses", request, "gpt-4o").tokens
    assert sim.records[-1].usage is not None
    assert sim.records[-1].usage["completion_tokens"] == r.usage.output_tokens


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_a_streamed_function_call_reassembles_to_the_reported_usage(
    live: tuple[Simulator, str],  # noqa: F811
    kind: str,
) -> None:
    _, url = live
    request = ASK_CITY | {"tool_choice": NAMED}
    with client_for(kind, url) as client:
        events = list(client.responses.create(**request, stream=True))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    final = events[-1].response
    [call] = final.output
    assert len(deltas) > 3 and "".join(deltas) == call.arguments
    # the project's reassembly of the raw stream estimates exactly what was reported
    path = "/openai/v1/responses" if kind == "v1" else "/openai/responses?api-version=2024-10-21"
    raw = httpx.post(url + path, json=request | {"stream": True}, headers={"api-key": KEY}).text
    summary = summarize_stream(raw)
    assert summary.tool_calls == [1] and summary.usage is not None
    estimate = count_completion("responses", request, "gpt-4o", summary.texts, summary.tool_calls)
    assert estimate == summary.usage.completion_tokens


@pytest.mark.parametrize("kind", ["azure", "v1"])
def test_a_reasoning_model_returns_a_reasoning_item_first(
    live: tuple[Simulator, str],  # noqa: F811
    kind: str,
) -> None:
    _, url = live
    request: dict[str, Any] = {"model": "gpt-5", "input": "Plan a trip."}
    with client_for(kind, url, _strict_response_validation=True) as strict:
        plain = strict.responses.create(**request)
        kept = strict.responses.create(**request, include=["reasoning.encrypted_content"])
        events = list(strict.responses.create(**request, stream=True))
    assert [o.type for o in plain.output] == ["reasoning", "message"]
    assert plain.output[0].encrypted_content is None and plain.output[0].summary == []
    encrypted = kept.output[0].encrypted_content
    assert encrypted and encrypted.startswith("gAAAA")
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["reasoning", "message"]
    assert plain.usage is not None and plain.usage.output_tokens_details.reasoning_tokens >= 64


def test_encrypted_input_is_billed_and_the_estimate_says_it_is_a_floor(
    live: tuple[Simulator, str],  # noqa: F811
) -> None:
    """The real API bills what an encrypted item holds; the offline count cannot see it."""
    _, url = live
    with client_for("v1", url) as client:
        first = client.responses.create(
            model="gpt-5", input="Plan a trip.", include=["reasoning.encrypted_content"]
        )
        reasoning = first.output[0].model_dump(exclude_none=True)
        earlier = {"role": "user", "content": "an earlier turn " * 40}
        compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAA" * 80}
        follow_up: dict[str, Any] = {
            "model": "gpt-5",
            "input": [earlier, compaction, reasoning, {"role": "user", "content": "And then?"}],
        }
        second = client.responses.create(**follow_up)
    count = count_prompt("responses", follow_up, "gpt-5")
    assert count.quality == "lower_bound"
    hidden = (len(compaction["encrypted_content"]) + len(reasoning["encrypted_content"])) * 3 // 16
    assert second.usage is not None and second.usage.input_tokens == count.tokens + hidden
    assert count.tokens < second.usage.input_tokens  # the floor holds


def test_each_capped_choice_bills_at_most_its_limit() -> None:
    """A text reply's framing (+1 where a call was possible) never takes a choice over the
    request's limit, whatever the other choices bill (o3-mini, four choices, hidden reasoning)."""
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Plan a trip."}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "n": 4,
        "max_completion_tokens": 300,
    }
    over = 0
    for seed in range(40):
        asked = request | {"seed": seed}
        plan = make_plan("chat", "o3-mini", "o3-mini", asked, max_reply_tokens=600, created=0)
        raw = [
            count_completion("chat", asked, "o3-mini", [c.text], [0]) + c.reasoning
            for c in plan.choices
        ]
        over += sum(r > 300 for r in raw)
        assert plan.completion_tokens == sum(min(r, 300) for r in raw), seed
    assert over > 0  # the case the cap is for did occur


def test_a_call_time_that_is_not_a_datetime_is_ignored() -> None:
    request = {"input": "hello"}
    for when in ("2025-03-01", 0, None):
        assert count_prompt("responses", request, "gpt-4o", when).quality == "approximate"  # type: ignore[arg-type]
