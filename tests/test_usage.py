"""Tests for aoai_helpers.core.usage: body usage, stream summaries and usage resolution (§5).

The fixtures are hand-built in the shapes AOAI sends (docs/architecture.md,
reference/azure-facts.md "AOAI data plane"): Azure's preamble chunk, per-choice
``content_filter_results``, annotation-only chunks after ``finish_reason``, the
``include_usage`` chunk, tool-call deltas, ``n > 1``, legacy completions, Responses API
named events, and the v1 policy's captures.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aoai_helpers.core import tokens
from aoai_helpers.core.chat_format import completion_framing
from aoai_helpers.core.events import V2_FIELDS, Usage, UsageEvent, parse_event
from aoai_helpers.core.usage import (
    ResolvedUsage,
    resolve_usage,
    summarize_stream,
    texts_from_body,
    usage_from_body,
)
from aoai_helpers.exceptions import TokenizerError

MODEL = "gpt-4o-2024-11-20"
CHAT_ID = "chatcmpl-AbC123"
SAFE = {"filtered": False, "severity": "safe"}
FILTERS = {"hate": SAFE, "self_harm": SAFE, "sexual": SAFE, "violence": SAFE}
CHAT_REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello to the world."},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
}


# ----------------------------------------------------------------------------- builders


def sse(*payloads: Any, done: bool = True) -> str:
    """An SSE body: one ``data:`` event per payload (str payloads are sent verbatim)."""
    parts = [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]
    return "".join(parts) + ("data: [DONE]\n\n" if done else "")


def named_sse(*events: tuple[str, dict[str, Any]]) -> str:
    """A Responses API body: ``event:`` + ``data:`` per event, no ``[DONE]``."""
    return "".join(
        f"event: {name}\ndata: {json.dumps({'type': name, **obj})}\n\n" for name, obj in events
    )


def chunk(
    choices: list[dict[str, Any]], *, usage: Any = None, cid: str = CHAT_ID
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1793613600,
        "model": MODEL,
        "system_fingerprint": "fp_b705f0c291",
        "choices": choices,
        "usage": usage,
    }


def delta(index: int = 0, finish: str | None = None, **d: Any) -> dict[str, Any]:
    return {"index": index, "finish_reason": finish, "delta": d, "content_filter_results": FILTERS}


PREAMBLE = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
}
ROLE = chunk(
    [
        {
            "index": 0,
            "finish_reason": None,
            "delta": {"role": "assistant", "content": ""},
            "content_filter_results": {},
        }
    ]
)
CONTENT = [chunk([delta(content=t)]) for t in ("Hello", " world", "!")]
FINISH = chunk([delta(finish="stop")])
ANNOTATION = {  # asynchronous filter: no delta, empty id, may come after finish_reason
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [
        {
            "index": 0,
            "finish_reason": None,
            "content_filter_results": FILTERS,
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 12},
        }
    ],
}
CHAT_USAGE = {
    "prompt_tokens": 26,
    "completion_tokens": 3,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
USAGE_CHUNK = chunk([], usage=CHAT_USAGE)
CHAT_STREAM = sse(PREAMBLE, ROLE, *CONTENT, FINISH, ANNOTATION, USAGE_CHUNK)
CHAT_STREAM_NO_USAGE = sse(PREAMBLE, ROLE, *CONTENT, FINISH, ANNOTATION)


def v1_event(request: Any, response: str | None, op: str = "ChatCompletions_Create") -> UsageEvent:
    body: dict[str, Any] = {
        "ExecTimeUTC": "2026-11-02 10:00:00",
        "GatewayRegion": "China North 3",
        "GatewayServiceName": "apim-aoai",
        "SubscriptionId": "bu-finance",
        "SubscriptionName": "Finance",
        "UserName": "",
        "UserEmail": None,
        "ProductName": "openai-product",
        "ApiName": "azure-openai",
        "OperationId": op,
        "Request": request,
        "ResponseString": response,
    }
    ev = parse_event(json.dumps(body))
    assert isinstance(ev, UsageEvent), ev
    return ev


def v2_event(**fields: Any) -> UsageEvent:
    body: dict[str, Any] = dict.fromkeys(V2_FIELDS)
    body.update(
        EventVersion=2,
        RequestId="5f1f2c1e-0000-4000-8000-000000000001",
        ExecTimeUTC="2026-11-02T10:00:00.123Z",
        SubscriptionId="bu-sales",
        OperationId="ChatCompletions_Create",
        Operation="chat",
        DeploymentName="chat-prod",
        ApiVersion="2024-10-21",
        IsStreaming=False,
        StatusCode=200,
    )
    body.update(fields)
    ev = parse_event(json.dumps(body))
    assert isinstance(ev, UsageEvent), ev
    return ev


def expected_estimate(
    op: str, request: dict[str, Any] | None, texts: list[str] | None, model: str | None
) -> Usage:
    prompt = tokens.count_prompt(op, request, model).tokens
    completion = tokens.count_completion_text(texts, model) if texts is not None else 0
    return Usage(prompt, completion, prompt + completion)


# ----------------------------------------------------------------------------- usage_from_body


def test_usage_from_chat_body_with_details() -> None:
    body = {
        "id": CHAT_ID,
        "object": "chat.completion",
        "model": "o4-mini-2025-04-16",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}
        ],
        "usage": {
            "prompt_tokens": 1536,
            "completion_tokens": 212,
            "total_tokens": 1748,
            "prompt_tokens_details": {"cached_tokens": 1280},
            "completion_tokens_details": {"reasoning_tokens": 192},
        },
    }
    assert usage_from_body(body) == Usage(1536, 212, 1748, 1280, 192)


def test_usage_from_completions_and_embeddings_bodies() -> None:
    completions = {
        "object": "text_completion",
        "model": "gpt-35-turbo-instruct",
        "choices": [
            {"text": " upon a time", "index": 0, "logprobs": None, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    }
    assert usage_from_body(completions) == Usage(4, 4, 8, 0, 0)
    embeddings = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    assert usage_from_body(embeddings) == Usage(5, 0, 5, 0, 0)


def test_usage_from_responses_body_and_nested_response() -> None:
    usage = {
        "input_tokens": 2048,
        "input_tokens_details": {"cached_tokens": 1920},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 256},
        "total_tokens": 2348,
    }
    body = {
        "id": "resp_1",
        "object": "response",
        "model": "o3",
        "status": "completed",
        "usage": usage,
    }
    assert usage_from_body(body) == Usage(2048, 300, 2348, 1920, 256)
    completed = {"type": "response.completed", "sequence_number": 9, "response": body}
    assert usage_from_body(completed) == Usage(2048, 300, 2348, 1920, 256)


def test_usage_from_body_nulls_and_missing() -> None:
    body = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "total_tokens": None,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": None},
        }
    }
    assert usage_from_body(body) == Usage(10, 2, 12, 0, 0)
    assert usage_from_body({"usage": {"input_tokens": 7, "output_tokens": 1}}) == Usage(7, 1, 8)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "usage",
        {},
        {"usage": None},
        {"usage": []},
        {"usage": {}},
        {"usage": {"other": 1}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 2, "total_tokens": 1}},
        {"usage": {"prompt_tokens": "10", "completion_tokens": 2, "total_tokens": 12}},
        {"usage": {"prompt_tokens": 10.0, "completion_tokens": 2, "total_tokens": 12}},
        {"usage": {"prompt_tokens": True, "completion_tokens": 2, "total_tokens": 3}},
        {"usage": {"prompt_tokens": 2**31, "total_tokens": 2**31}},
        {"usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": -5}}},
        {"usage": {"input_tokens": 5, "output_tokens_details": {"reasoning_tokens": "x"}}},
        {"response": {"usage": "nope"}},
    ],
)
def test_usage_from_body_rejects_garbage(body: Any) -> None:
    assert usage_from_body(body) is None


# ----------------------------------------------------------------------------- summarize_stream


def test_summarize_azure_chat_stream_with_usage_chunk() -> None:
    s = summarize_stream(CHAT_STREAM)
    assert s.usage == Usage(26, 3, 29, 0, 0)
    assert s.model == MODEL  # the preamble's empty model is skipped
    assert s.texts == ["Hello world!"]
    assert s.done is True
    assert s.chunks == 8
    assert s.bad_lines == 0
    assert s.finish_reasons == {0: "stop"}
    assert s.truncated is False


def test_summarize_finds_usage_chunk_before_trailing_annotations() -> None:
    body = sse(PREAMBLE, ROLE, *CONTENT, FINISH, USAGE_CHUNK, ANNOTATION, ANNOTATION)
    s = summarize_stream(body)
    assert s.usage == Usage(26, 3, 29)
    assert s.texts == ["Hello world!"]


def test_summarize_chat_stream_without_usage_chunk() -> None:
    s = summarize_stream(CHAT_STREAM_NO_USAGE)
    assert s.usage is None
    assert s.texts == ["Hello world!"]
    assert s.done is True


def test_summarize_older_prompt_annotations_and_content_filter_finish() -> None:
    preamble = {**PREAMBLE, "prompt_annotations": PREAMBLE["prompt_filter_results"]}
    del preamble["prompt_filter_results"]
    blocked = chunk(
        [
            {
                "index": 0,
                "finish_reason": "content_filter",
                "delta": {},
                "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}},
            }
        ]
    )
    s = summarize_stream(sse(preamble, ROLE, CONTENT[0], blocked))
    assert s.texts == ["Hello"]
    assert s.finish_reasons == {0: "content_filter"}


def test_summarize_tool_call_stream() -> None:
    call0 = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    call1 = {
        "index": 1,
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    body = sse(
        PREAMBLE,
        chunk([delta(role="assistant", content=None, tool_calls=[call0])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": ' "Paris"}'}}])]),
        chunk([delta(tool_calls=[call1])]),
        chunk([delta(tool_calls=[{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}])]),
        chunk([delta(finish="tool_calls")]),
    )
    s = summarize_stream(body)
    # several calls: one multi_tool_use.parallel call, as the model writes it
    assert s.texts == [
        'multi_tool_use.parallel{"tool_uses":['
        '{"recipient_name":"functions.get_weather","parameters":{"city":"Paris"}},'
        '{"recipient_name":"functions.get_time","parameters":{"tz":"CET"}}]}'
    ]
    assert s.tool_calls == [2]
    assert s.finish_reasons == {0: "tool_calls"}


def test_summarize_n2_interleaved_choices() -> None:
    body = sse(
        PREAMBLE,
        chunk([{**delta(0, role="assistant", content=""), "content_filter_results": {}}]),
        chunk([{**delta(1, role="assistant", content=""), "content_filter_results": {}}]),
        chunk([delta(1, content="Blue")]),
        chunk([delta(0, content="Red")]),
        chunk([delta(1, content=" sky")]),
        chunk([delta(0, finish="stop")]),
        chunk([delta(1, finish="length")]),
    )
    s = summarize_stream(body)
    assert s.texts == ["Red", "Blue sky"]
    assert s.finish_reasons == {0: "stop", 1: "length"}


def test_summarize_legacy_completions_stream() -> None:
    def cmpl(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-7",
            "object": "text_completion",
            "created": 1793613600,
            "model": "gpt-35-turbo-instruct",
            "choices": [
                {
                    "text": text,
                    "index": 0,
                    "finish_reason": finish,
                    "logprobs": None,
                    "content_filter_results": FILTERS,
                }
            ],
        }

    s = summarize_stream(sse(PREAMBLE, cmpl("Once"), cmpl(" upon"), cmpl(" a time", "length")))
    assert s.texts == ["Once upon a time"]
    assert s.model == "gpt-35-turbo-instruct"
    assert s.finish_reasons == {0: "length"}


RESPONSES_USAGE = {
    "input_tokens": 31,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 17,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 48,
}
RESPONSE = {"id": "resp_9", "object": "response", "model": "gpt-4.1-2025-04-14", "output": []}


def responses_stream(*, completed: bool = True) -> str:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "response.created",
            {
                "sequence_number": 0,
                "response": {**RESPONSE, "status": "in_progress", "usage": None},
            },
        ),
        (
            "response.in_progress",
            {"sequence_number": 1, "response": {**RESPONSE, "status": "in_progress"}},
        ),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []},
            },
        ),
        (
            "response.output_text.delta",
            {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Bon"},
        ),
        (
            "response.output_text.delta",
            {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "jour"},
        ),
        (
            "response.output_text.done",
            {"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Bonjour"},
        ),
        (
            "response.output_item.added",
            {
                "output_index": 1,
                "item": {
                    "id": "fc_1",
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "lookup",
                    "arguments": "",
                },
            },
        ),
        (
            "response.function_call_arguments.delta",
            {"item_id": "fc_1", "output_index": 1, "delta": '{"q":'},
        ),
        (
            "response.function_call_arguments.delta",
            {"item_id": "fc_1", "output_index": 1, "delta": ' "x"}'},
        ),
        (
            "response.function_call_arguments.done",
            {"item_id": "fc_1", "output_index": 1, "arguments": '{"q": "x"}'},
        ),
    ]
    if completed:
        events.append(
            (
                "response.completed",
                {
                    "sequence_number": 11,
                    "response": {**RESPONSE, "status": "completed", "usage": RESPONSES_USAGE},
                },
            )
        )
    return named_sse(*events)


def test_summarize_responses_stream() -> None:
    s = summarize_stream(responses_stream())
    assert s.usage == Usage(31, 17, 48, 0, 0)
    assert s.model == "gpt-4.1-2025-04-14"
    assert s.texts == ['Bonjour to=functions.lookup{"q": "x"}']
    assert s.done is True
    assert s.chunks == 11
    assert s.finish_reasons == {0: "completed"}


def test_summarize_responses_stream_without_event_lines_uses_type() -> None:
    # Some captures keep only the data lines; each payload's "type" names the event.
    body = "".join(
        line + "\n\n" for line in responses_stream().split("\n") if line.startswith("data:")
    )
    s = summarize_stream(body)
    assert s.usage == Usage(31, 17, 48)
    assert s.texts == ['Bonjour to=functions.lookup{"q": "x"}']


def test_summarize_stream_cut_midway() -> None:
    whole = CHAT_STREAM_NO_USAGE
    cut = whole[: whole.index('" world"') + 5]
    s = summarize_stream(cut)
    assert s.texts == ["Hello"]
    assert s.done is False
    assert s.truncated is True
    assert s.usage is None
    assert s.model == MODEL


def test_summarize_counts_bad_lines_and_crlf() -> None:
    body = CHAT_STREAM.replace("\n", "\r\n").replace(
        "data: [DONE]", "data: {broken\r\n\r\ndata: [DONE]"
    )
    s = summarize_stream(body)
    assert s.bad_lines == 1
    assert s.usage == Usage(26, 3, 29)
    assert s.texts == ["Hello world!"]


def test_summarize_odd_shapes_do_not_crash() -> None:
    body = sse(
        {"choices": "x"},
        {"choices": [None, 3, {"index": "a", "delta": {"content": "ok"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": "nope", "content": 5}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [None, {"function": "f"}]}}]},
        {"usage": {"prompt_tokens": -3}},
        {"type": "response.completed", "response": "x"},
    )
    s = summarize_stream(body)
    assert s.texts == ["", "ok"]  # choice 0 (nothing usable), then the one at position 2
    assert s.usage is None
    assert s.chunks == 6


def test_texts_from_body_shapes() -> None:
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ]
    }
    assert texts_from_body(chat) == [" to=functions.f{}"]
    responses = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
        ]
    }
    assert texts_from_body(responses) == ["Hi"]
    assert texts_from_body({"response": responses}) == ["Hi"]


# ----------------------------------------------------------------------------- resolve_usage


def test_resolve_v2_reported_is_trivial(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> Any:
        raise AssertionError("must not be called for reported usage")

    monkeypatch.setattr(tokens, "count_prompt", boom)
    monkeypatch.setattr("aoai_helpers.core.usage.summarize_stream", boom)
    monkeypatch.setattr("aoai_helpers.core.usage.json_object", boom)
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "total_tokens": 1280,
        "cached_tokens": 1024,
        "reasoning_tokens": 0,
    }
    ev = v2_event(Model=MODEL, Usage=usage, ResponseString=CHAT_STREAM)
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(1200, 80, 1280, 1024, 0), "reported", MODEL, None, True
    )


def test_resolve_non_2xx_without_usage_is_unbilled() -> None:
    ev = v2_event(StatusCode=429, Request={"messages": [{"role": "user", "content": "hi"}]})
    assert resolve_usage(ev) == ResolvedUsage(Usage(), "unbilled", "chat-prod", None, True)
    with_usage = v2_event(
        StatusCode=500,
        Model=MODEL,
        Usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    )
    assert resolve_usage(with_usage).source == "reported"


def test_resolve_v2_prompt_only_and_model_fallbacks() -> None:
    request = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
    }
    ev = v2_event(Request=request)
    res = resolve_usage(ev)
    assert res.source == "prompt_only"
    assert res.model == "gpt-4o"
    assert res.usage == expected_estimate("chat", request, None, "gpt-4o")
    assert res.usage.completion_tokens == 0 and res.usage.prompt_tokens > 0
    assert res.encoding == "o200k_base" and res.model_known is True
    no_model = {"messages": request["messages"]}
    assert resolve_usage(v2_event(Request=no_model)).model == "chat-prod"
    mapped = resolve_usage(v2_event(Request=no_model), {"chat-prod": "gpt-35-turbo"})
    assert mapped.model == "gpt-35-turbo"
    assert mapped.encoding == "cl100k_base"
    assert mapped.usage == expected_estimate("chat", no_model, None, "gpt-35-turbo")


def test_resolve_v2_captured_stream_with_usage_chunk() -> None:
    ev = v2_event(IsStreaming=True, Request=CHAT_REQUEST, ResponseString=CHAT_STREAM)
    assert resolve_usage(ev) == ResolvedUsage(Usage(26, 3, 29), "reported", MODEL, None, True)


def test_resolve_captured_stream_without_usage_is_estimated() -> None:
    ev = v1_event(CHAT_REQUEST, CHAT_STREAM_NO_USAGE)
    res = resolve_usage(ev)
    assert res.source == "estimated"
    assert res.model == MODEL
    assert res.usage == expected_estimate("chat", CHAT_REQUEST, ["Hello world!"], MODEL)
    assert res.usage.completion_tokens == 3  # "Hello", " world", "!" in o200k_base


def test_resolve_captured_responses_stream() -> None:
    request = {"model": "gpt-4.1", "input": "Say bonjour", "stream": True}
    ev = v2_event(
        Operation="responses", IsStreaming=True, Request=request, ResponseString=responses_stream()
    )
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(31, 17, 48), "reported", "gpt-4.1-2025-04-14", None, True
    )
    cut = v2_event(
        Operation="responses",
        IsStreaming=True,
        Request=request,
        ResponseString=responses_stream(completed=False),
    )
    res = resolve_usage(cut)
    assert res.source == "estimated"
    texts = ['Bonjour to=functions.lookup{"q": "x"}']
    expected = expected_estimate("responses", request, texts, "gpt-4.1-2025-04-14")
    framing = completion_framing("responses", False, texts, [1])
    assert framing == 4 + 1  # one call (+4), a Responses function_call (+1)
    assert res.usage == Usage(
        expected.prompt_tokens,
        expected.completion_tokens + framing,
        expected.total_tokens + framing,
    )


def test_resolve_v1_non_streamed_chat_body() -> None:
    body = {
        "id": CHAT_ID,
        "object": "chat.completion",
        "created": 1793613600,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hi"},
                "content_filter_results": FILTERS,
            }
        ],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        "usage": {
            "prompt_tokens": 1100,
            "completion_tokens": 2,
            "total_tokens": 1102,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    }
    ev = v1_event({"messages": [{"role": "user", "content": "Hi"}]}, json.dumps(body, indent=2))
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(1100, 2, 1102, 1024, 0), "reported", "gpt-4o-2024-08-06", None, True
    )


def test_resolve_non_streamed_body_without_usage_is_estimated_from_its_text() -> None:
    request = {"messages": [{"role": "user", "content": "Hi"}]}
    body = {
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}}],
    }
    res = resolve_usage(v1_event(request, json.dumps(body)))
    assert res.source == "estimated"
    assert res.usage == expected_estimate("chat", request, ["Hello there"], MODEL)


def test_resolve_v1_embeddings_full_body_and_fragments() -> None:
    request = {"input": "test for embedding"}
    full = json.dumps(
        {
            "object": "list",
            "data": [],
            "model": "ada",
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        },
        indent=2,
    )
    ev = v1_event(request, full, op="embeddings_create")
    assert resolve_usage(ev) == ResolvedUsage(Usage(3, 0, 3), "reported", "ada", None, True)
    # The original policy cut `"model"…` up to the last newline and prefixed "{": the final
    # brace is lost, or junk follows.
    fragment = (
        '{"model": "text-embedding-ada-002",\n'
        '  "usage": {\n    "prompt_tokens": 5,\n    "total_tokens": 5\n  }'
    )
    ev = v1_event(request, fragment, op="embeddings_create")
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(5, 0, 5), "reported", "text-embedding-ada-002", None, True
    )
    junk = (
        '{"model": "text-embedding-3-small", "usage": {"prompt_tokens": 7, "total_tokens": 7}}'
        "\n}\n<trailing junk"
    )
    ev = v1_event(request, junk, op="embeddings_create")
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(7, 0, 7), "reported", "text-embedding-3-small", None, True
    )


def test_resolve_embeddings_without_usage_counts_input_only() -> None:
    request = {"input": ["alpha beta", "gamma"], "model": "text-embedding-3-small"}
    res = resolve_usage(v1_event(request, "", op="embeddings_create"))
    assert res.source == "prompt_only"
    assert res.usage == expected_estimate("embeddings", request, None, "text-embedding-3-small")
    assert res.usage.completion_tokens == 0


def test_resolve_v1_streamed_escaped_content() -> None:
    raw = r"Hello\n\"quoted\" \u4e2d\u6587 done"
    ev = v1_event(CHAT_REQUEST, raw)
    res = resolve_usage(ev)
    assert res.source == "estimated"
    assert res.model is None  # v1: no model anywhere, no deployment name
    text = 'Hello\n"quoted" 中文 done'
    assert res.usage == expected_estimate("chat", CHAT_REQUEST, [text], None)
    assert res.encoding == "o200k_base" and res.model_known is False


def test_resolve_v1_streamed_escaped_content_cut_mid_escape() -> None:
    request = {**CHAT_REQUEST, "model": "gpt-4"}
    res = resolve_usage(v1_event(request, "  leading space kept \\u4e2d\\u4e"))
    assert res.source == "estimated"
    assert res.usage == expected_estimate("chat", request, ["  leading space kept 中"], "gpt-4")
    assert res.encoding == "cl100k_base"


def test_resolve_v1_streamed_content_that_looks_like_json_or_sse() -> None:
    request = {**CHAT_REQUEST, "model": "gpt-4o"}
    for raw, text in [("{}", "{}"), (r"{\"a\": 1}", '{"a": 1}'), ("data: x", "data: x")]:
        res = resolve_usage(v1_event(request, raw))
        assert res.source == "estimated", raw
        assert res.usage == expected_estimate("chat", request, [text], "gpt-4o"), raw


def test_resolve_v1_completions_streamed_text() -> None:
    request = {"prompt": "Once", "stream": True, "max_tokens": 5}
    ev = v1_event(request, r" upon a time\n", op="Completions_Create")
    res = resolve_usage(ev)
    assert res.source == "estimated"
    assert res.usage == expected_estimate("completions", request, [" upon a time\n"], None)


def test_resolve_v1_streamed_capture_off_is_prompt_only() -> None:
    res = resolve_usage(v1_event(CHAT_REQUEST, ""))
    assert res.source == "prompt_only"
    assert res.usage == expected_estimate("chat", CHAT_REQUEST, None, None)


@pytest.mark.parametrize(
    ("request_", "response"),
    [
        (None, None),
        ({"messages": 5}, None),
        ({"messages": [None, 3, {"role": 1, "content": {"x": [1]}}], "model": 7}, "{"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "[1, 2, 3]"),
        ({"messages": []}, '{"usage": {"prompt_tokens": -4}}'),
        ({"messages": []}, "<html>502 Bad Gateway</html>"),
        ({"messages": []}, '{"error": {"code": "content_filter"}}'),
    ],
)
def test_resolve_never_raises_on_garbage(request_: Any, response: str | None) -> None:
    res = resolve_usage(v1_event(request_, response))
    assert res.source == "prompt_only"
    assert res.usage.completion_tokens == 0
    assert res.usage.total_tokens == res.usage.prompt_tokens >= 0


def test_resolve_streamed_garbage_sse_is_prompt_only() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    body = "data: {oops\n\ndata: nope\n\n"
    res = resolve_usage(v2_event(IsStreaming=True, Request=request, ResponseString=body))
    assert res.source == "prompt_only"
    assert res.usage == expected_estimate("chat", request, None, "chat-prod")


def test_resolve_stream_with_preamble_only_is_estimated_with_no_output() -> None:
    res = resolve_usage(v1_event(CHAT_REQUEST, sse(PREAMBLE, done=False)))
    assert res.source == "estimated"
    assert res.usage == expected_estimate("chat", CHAT_REQUEST, [], None)
    assert res.usage.completion_tokens == 0


def test_resolve_tokenizer_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise TokenizerError("o200k_base.tiktoken missing")

    def buggy(*_: Any) -> Any:
        raise ValueError("unexpected shape")

    ev = v1_event(CHAT_REQUEST, r"some\ntext")
    monkeypatch.setattr(tokens, "count_prompt", broken)
    with pytest.raises(TokenizerError):
        resolve_usage(ev)
    monkeypatch.setattr(tokens, "count_prompt", buggy)
    monkeypatch.setattr(tokens, "count_completion_text", buggy)
    assert resolve_usage(ev) == ResolvedUsage(
        Usage(), "estimated", None, None, False, "lower_bound"
    )  # garbage the tokenizer could not digest: a floor, never a claim
