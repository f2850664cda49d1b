"""Tests for aoai_helpers.core.sse: SSE framing, JSON payloads, and v1 escaped-content decoding."""

from __future__ import annotations

import json

import pytest

from aoai_helpers.core.sse import (
    DONE,
    ParsedStream,
    SseEvent,
    iter_sse,
    json_object,
    parse_json_events,
    parse_stream,
    unescape_json_fragment,
)


def _data(*objs: object) -> str:
    return "".join(f"data: {json.dumps(o)}\n\n" for o in objs)


# ----------------------------------------------------------------------------- iter_sse


def test_iter_sse_basic_events_and_done() -> None:
    body = 'data: {"a": 1}\n\ndata: {"a": 2}\n\ndata: [DONE]\n\n'
    assert list(iter_sse(body)) == [
        SseEvent(None, '{"a": 1}'),
        SseEvent(None, '{"a": 2}'),
        SseEvent(None, DONE),
    ]


def test_iter_sse_named_events_comments_and_ignored_fields() -> None:
    body = (
        ": keep-alive comment\n"
        "event: response.created\n"
        "id: 7\n"
        "retry: 1000\n"
        'data: {"type": "response.created"}\n'
        "\n"
        "event: response.output_text.delta\n"
        'data: {"delta": "Hi"}\n'
        "\n"
        "event: lonely-name-without-data\n"
        "\n"
        'data: {"after": true}\n'
        "\n"
    )
    assert list(iter_sse(body)) == [
        SseEvent("response.created", '{"type": "response.created"}'),
        SseEvent("response.output_text.delta", '{"delta": "Hi"}'),
        SseEvent(None, '{"after": true}'),  # the name was reset by the blank line
    ]


def test_iter_sse_multiline_data_joined_with_newline() -> None:
    body = 'data: {"a":\ndata:  1}\n\n'
    # Exactly one space after the colon is removed; the second keeps one of its two.
    assert list(iter_sse(body)) == [SseEvent(None, '{"a":\n 1}')]


@pytest.mark.parametrize("sep", ["\r\n", "\r", "\n"])
def test_iter_sse_line_endings(sep: str) -> None:
    body = sep.join(["data: one", "", "event: e", "data: two", "", ""])
    assert list(iter_sse(body)) == [SseEvent(None, "one"), SseEvent("e", "two")]


def test_iter_sse_data_without_space_and_field_without_colon() -> None:
    body = "data:x\n\ndata\n\n"
    # "data" alone is a data field with an empty value; an empty payload is still yielded.
    assert list(iter_sse(body)) == [SseEvent(None, "x"), SseEvent(None, "")]


def test_iter_sse_missing_trailing_blank_line_is_flagged_incomplete() -> None:
    assert list(iter_sse("data: a\n\ndata: b\n")) == [
        SseEvent(None, "a"),
        SseEvent(None, "b", complete=False),
    ]
    assert list(iter_sse("data: [DONE]")) == [SseEvent(None, DONE, complete=False)]


def test_iter_sse_bom_and_empty() -> None:
    assert list(iter_sse("\ufeffdata: a\n\n")) == [SseEvent(None, "a")]
    assert list(iter_sse("")) == []
    assert list(iter_sse("\n\n: only a comment\n\n")) == []


def test_iter_sse_keeps_unicode_line_separators_inside_data() -> None:
    # U+2028 is legal raw inside a JSON string; it must not split the line.
    body = 'data: {"t": "a\u2028b"}\n\n'
    assert parse_json_events(body) == [(None, {"t": "a\u2028b"})]


# ----------------------------------------------------------------------------- parse_stream


def test_parse_stream_counts_bad_lines_and_done() -> None:
    body = _data({"n": 1}) + "data: not json\n\ndata: 42\n\ndata: [1, 2]\n\n" + "data: [DONE]\n\n"
    parsed = parse_stream(body)
    assert parsed == ParsedStream([(None, {"n": 1})], done=True, bad_lines=3, truncated=False)


def test_parse_stream_cut_mid_event_is_truncated_not_bad() -> None:
    body = _data({"n": 1}, {"n": 2}) + 'data: {"n": 3, "choi'
    parsed = parse_stream(body)
    assert [o["n"] for _, o in parsed.events] == [1, 2]
    assert parsed.truncated is True
    assert parsed.bad_lines == 0
    assert parsed.done is False


def test_parse_stream_accepts_last_event_without_blank_line() -> None:
    parsed = parse_stream(_data({"n": 1}) + 'data: {"n": 2}')
    assert [o["n"] for _, o in parsed.events] == [1, 2]
    assert parsed.truncated is False


def test_parse_stream_recovers_chunks_when_blank_lines_were_lost() -> None:
    body = 'data: {"n": 1}\ndata: {"n": 2}\ndata: oops\ndata: [DONE]\n'
    parsed = parse_stream(body)
    assert [o["n"] for _, o in parsed.events] == [1, 2]
    assert parsed.done is True
    assert parsed.bad_lines == 1


def test_parse_stream_multiline_json_document() -> None:
    body = 'data: {"n":\ndata: 5}\n\n'
    assert parse_json_events(body) == [(None, {"n": 5})]


def test_parse_stream_empty_payload_is_ignored() -> None:
    assert parse_stream("data:\n\ndata: \n\n") == ParsedStream()


def test_parse_json_events_keeps_event_names() -> None:
    body = 'event: response.completed\ndata: {"type": "response.completed"}\n\n'
    assert parse_json_events(body) == [("response.completed", {"type": "response.completed"})]


def test_json_object_never_raises() -> None:
    assert json_object('{"a": 1}') == {"a": 1}
    assert json_object("[1]") is None
    assert json_object("{") is None
    assert json_object('"\ud800"') is None  # lone surrogate: not encodable as UTF-8
    assert json_object("") is None


# ----------------------------------------------------------------------------- unescape


def test_unescape_valid_fragment() -> None:
    raw = r"Line one\nHe said \"hi\" \u4e2d\u6587 \\ tab\t end\/"
    assert unescape_json_fragment(raw) == 'Line one\nHe said "hi" 中文 \\ tab\t end/'


def test_unescape_surrogate_pair_and_lone_surrogate() -> None:
    assert unescape_json_fragment(r"smile \ud83d\ude00") == "smile \U0001f600"
    assert unescape_json_fragment(r"half \ud83d only") == "half \ufffd only"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"abc\u4e", "abc"),  # cut inside a \u escape
        ("abc\\", "abc"),  # cut right after the backslash
        (r"x\u4e2d y\u12", "x中 y"),
        (r"raw \"quote\" and bad \q escape\u", 'raw "quote" and bad q escape'),
    ],
)
def test_unescape_lenient_when_cut_mid_escape(raw: str, expected: str) -> None:
    assert unescape_json_fragment(raw) == expected


def test_unescape_raw_quote_falls_back_to_lenient() -> None:
    # A raw quote makes the strict decode fail; the lenient path keeps it.
    assert unescape_json_fragment('say "x" \\n') == 'say "x" \n'
