"""The event's request copy (aoai_helpers.core.shrink): it fits, keeps its shape, and what it proves
about the prompt is never more than the prompt really was."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aoai_helpers.core.shrink import MARKER, OMITTED, request_stats, shrink_request
from aoai_helpers.core.tokens import count_prompt, proven_tokens

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUDGET = 51_200


def test_a_request_that_fits_is_kept_as_it_is() -> None:
    small = {"messages": [{"role": "user", "content": "hi"}]}
    assert shrink_request(small, 1000) is small
    assert proven_tokens("chat", small, "o200k_base") == 0  # not shrunk: nothing to prove


def test_long_strings_are_cut_evenly_and_the_size_is_recorded() -> None:
    big = {
        "messages": [
            {"role": "user", "content": "word " * 20_000},
            {"role": "system", "content": "x" * 9_000},
        ]
    }
    out = shrink_request(big, 4_000)
    assert len(orjson.dumps(out)) <= 4_000
    assert out[MARKER] == {"items": 2, "strings": 4, "chars": 100_000 + 9_000 + 4 + 6}
    a, b = (m["content"] for m in out["messages"])
    assert a.endswith("…") and b.endswith("…") and len(a) == len(b)
    assert big["messages"][0]["content"] == "word " * 20_000  # the input is not modified


def test_many_small_parts_are_thinned_around_a_count_of_what_was_left_out() -> None:
    req = {"messages": [{"role": "user", "content": "hi"}] * 20_000, "stream": True}
    out = shrink_request(req, BUDGET)
    assert len(orjson.dumps(out)) <= BUDGET
    kept = out["messages"]
    (marker,) = [m for m in kept if OMITTED in m]
    assert marker[OMITTED] + len(kept) - 1 == 20_000 and out["stream"] is True
    # what it proves is exactly the prompt: 3 a message, 1 a non-empty string, 3 to prime
    assert (
        count_prompt("chat", out, "gpt-4o").tokens
        == 100_003
        == count_prompt("chat", req, "gpt-4o").tokens
    )


def test_nothing_fits_still_leaves_the_size() -> None:
    out = shrink_request({"input": ["x"] * 5_000}, 60)
    assert out == {MARKER: {"items": 5_000, "strings": 5_000, "chars": 5_000}}


messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(max_size=300)}
    ),
    min_size=1,
    max_size=60,
)


@FAST
@given(messages, st.integers(min_value=200, max_value=6_000))
def test_what_a_shrunk_chat_proves_is_never_more_than_the_prompt(
    msgs: list[dict[str, str]], budget: int
) -> None:
    req = {"messages": msgs}
    out = shrink_request(req, budget)
    assert len(orjson.dumps(out)) <= budget or out == {MARKER: request_stats(req)}
    true = count_prompt("chat", req, "gpt-4o").tokens
    assert proven_tokens("chat", out, "o200k_base") <= true
    if out is not req:  # what ingest bills for a shrunk copy: at least the proof
        assert count_prompt("chat", out, "gpt-4o").tokens >= proven_tokens(
            "chat", out, "o200k_base"
        )


@FAST
@given(st.lists(st.text(min_size=1, max_size=400), min_size=1, max_size=40))
def test_what_shrunk_embeddings_prove_is_never_more_than_the_input(texts: list[str]) -> None:
    req = {"input": texts}
    out = shrink_request(req, 300)
    assert (
        proven_tokens("embeddings", out, "cl100k_base")
        <= count_prompt("embeddings", req, "text-embedding-3-small").tokens
    )
