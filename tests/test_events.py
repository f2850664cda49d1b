"""Tests for aoai_helpers.core.events: the v2 contract, v1 events, parse errors and the JSON Schema.

Bad input is never an exception: every malformed body below must come back as an
:class:`EventError` value whose ``reason`` says what was wrong and whose ``raw`` keeps the body.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jsonschema
import pytest

from aoai_helpers.core.events import (
    LOG_TO_EVENTHUB_LIMIT,
    USAGE_FIELDS,
    V2_FIELDS,
    EventError,
    Usage,
    UsageEvent,
    load_v2_schema,
    operation_from_path,
    parse_event,
    v1_request_id,
)
from aoai_helpers.synthetic.events import v2_reported_events

CALLER_FIELDS = (
    "GatewayRegion",
    "GatewayServiceName",
    "SubscriptionId",
    "SubscriptionName",
    "ProductName",
    "UserName",
    "UserEmail",
    "ApiName",
    "OperationId",
)


def raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode("utf-8")


def parsed_ok(body: bytes | str) -> UsageEvent:
    result = parse_event(body)
    assert isinstance(result, UsageEvent), result
    return result


def parsed_error(body: bytes | str) -> EventError:
    result = parse_event(body)
    assert isinstance(result, EventError), result
    return result


# ----------------------------------------------------------------------------- v2


def test_v2_every_field_is_mapped(make_v2):
    request = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    event = make_v2(
        RequestId="0f8fad5b-d9cb-469f-a165-70867728950e",
        Operation="responses",
        OperationId="createResponse",
        DeploymentName="gpt-5-mini",
        ApiVersion="2025-04-01-preview",
        IsStreaming=True,
        StatusCode=201,
        Model="gpt-5-mini-2025-08-07",
        Usage={
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "cached_tokens": 1024,
            "reasoning_tokens": 128,
        },
        Request=request,
        ResponseString="data: {}",
    )
    ev = parsed_ok(raw(event))
    assert ev == UsageEvent(
        request_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        event_version=2,
        exec_time=datetime(2026, 11, 5, 10, 0, 0, 123000),
        gateway_region="West Europe",
        gateway_service_name="apim-test",
        subscription_id="sub-test-01",
        subscription_name="test-subscription",
        product_name="openai-product",
        user_name="Test User",
        user_email="test.user@example.com",
        api_name="Azure OpenAI",
        operation_id="createResponse",
        operation="responses",
        deployment_name="gpt-5-mini",
        api_version="2025-04-01-preview",
        is_streaming=True,
        status_code=201,
        model="gpt-5-mini-2025-08-07",
        usage=Usage(1200, 300, 1500, 1024, 128),
        request=request,
        response_string="data: {}",
    )


def test_v2_default_factory_event_parses(make_v2):
    ev = parsed_ok(raw(make_v2()))
    assert ev.event_version == 2
    assert ev.operation == "chat"
    assert ev.is_streaming is False
    assert ev.status_code == 200
    assert ev.model == "gpt-4o-2024-11-20"
    assert ev.usage == Usage(100, 50, 150, 0, 0)
    assert ev.request is None
    assert ev.response_string is None


def test_v2_accepts_str_body(make_v2):
    event = make_v2()
    ev = parsed_ok(json.dumps(event))
    assert ev.request_id == event["RequestId"]


def test_v2_z_time_is_naive_utc(make_v2):
    ev = parsed_ok(raw(make_v2(ExecTimeUTC="2026-11-05T10:00:00.123Z")))
    assert ev.exec_time == datetime(2026, 11, 5, 10, 0, 0, 123000)
    assert ev.exec_time.tzinfo is None


def test_v2_offset_time_is_converted_to_utc(make_v2):
    ev = parsed_ok(raw(make_v2(ExecTimeUTC="2026-11-05T12:00:00.123+02:00")))
    assert ev.exec_time == datetime(2026, 11, 5, 10, 0, 0, 123000)
    assert ev.exec_time.tzinfo is None


def test_v2_offset_across_midnight(make_v2):
    ev = parsed_ok(raw(make_v2(ExecTimeUTC="2026-11-01T01:30:00.000+02:00")))
    assert ev.exec_time == datetime(2026, 10, 31, 23, 30)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-05T10:00:00.123Z",
        "2026-11-05T10:00:00Z",
        "2026-11-05T10:00:00.123+00:00",
        "2026-11-05T05:00:00.123-05:00",
        "2026-11-05T12:00:00.123+02:00Z",
    ],
)
def test_v2_exec_time_is_naive_utc_or_error(make_v2, value):
    result = parse_event(raw(make_v2(ExecTimeUTC=value)))
    if isinstance(result, UsageEvent):
        assert result.exec_time.tzinfo is None
        assert result.exec_time == datetime(2026, 11, 5, 10, 0, 0, 123000 if ".123" in value else 0)


def test_v2_null_optional_fields(make_v2):
    nulls = dict.fromkeys(
        (*CALLER_FIELDS, "DeploymentName", "ApiVersion", "Model", "Request", "ResponseString")
    )
    ev = parsed_ok(raw(make_v2(Usage=None, **nulls)))
    assert ev.usage is None
    assert ev.subscription_id is None
    assert ev.operation_id is None
    assert ev.model is None
    assert ev.deployment_name is None


def test_v2_empty_usage_object_means_not_reported(make_v2):
    ev = parsed_ok(raw(make_v2(Usage={})))
    assert ev.usage is None


def test_v2_usage_total_filled_from_parts(make_v2):
    usage = {"prompt_tokens": 70, "completion_tokens": 5}
    ev = parsed_ok(raw(make_v2(Usage=usage)))
    assert ev.usage == Usage(70, 5, 75, 0, 0)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}, (0, 0, 0)),
        ({"prompt_tokens": -0.0, "completion_tokens": 0.0, "total_tokens": -0.0}, (0, 0, 0)),
        ({"prompt_tokens": 7, "completion_tokens": -0.0, "cached_tokens": None}, (7, 0, 7)),
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": None}, (100, 50, 150)),
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 0}, (100, 50, 150)),
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 10}, (100, 50, 150)),
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 149}, (100, 50, 150)),
        ({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 200}, (100, 50, 200)),
        ({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 12}, (0, 0, 12)),
    ],
)
def test_v2_usage_nulls_and_minus_zero_are_zero_and_the_total_covers_its_parts(
    make_v2, usage, expected
):
    ev = parsed_ok(raw(make_v2(Usage=usage)))
    assert ev.usage is not None
    assert (ev.usage.prompt_tokens, ev.usage.completion_tokens, ev.usage.total_tokens) == expected
    assert ev.usage.total_tokens >= ev.usage.prompt_tokens + ev.usage.completion_tokens
    assert all(type(n) is int for n in ev.usage.as_dict().values())


def test_v2_usage_minus_zero_as_written_in_json(make_v2):
    body = raw(make_v2(Usage={"prompt_tokens": 1})).replace(
        b'"prompt_tokens": 1',
        b'"prompt_tokens": -0, "completion_tokens": -0.0, "cached_tokens": -0',
    )
    assert b"-0.0" in body
    ev = parsed_ok(body)
    assert ev.usage == Usage(0, 0, 0, 0, 0)


def test_v2_usage_other_counts_are_kept_as_reported(make_v2):
    usage = {
        "prompt_tokens": 80,
        "completion_tokens": 20,
        "total_tokens": 90,
        "cached_tokens": 64,
        "reasoning_tokens": 12,
    }
    assert parsed_ok(raw(make_v2(Usage=usage))).usage == Usage(80, 20, 100, 64, 12)


@pytest.mark.parametrize("bad", [1.5, -1.0, 0.5, float(2**40)])
def test_v2_usage_non_zero_floats_are_still_errors(make_v2, bad):
    err = parsed_error(raw(make_v2(Usage={"prompt_tokens": bad})))
    assert "Usage.prompt_tokens" in err.reason


NOW = "2027-03-01T00:05:00Z"


@pytest.mark.parametrize(
    "value",
    [
        "2019-12-31T23:59:59.999Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "2020-01-01T04:59:59+05:00",  # 2019-12-31T23:59:59 UTC
        "9999-12-31T23:59:59Z",
        "2027-03-02T00:05:01Z",  # a day and a second after the clock
        "2027-03-02T02:05:01+02:00",
        "2100-01-01T00:00:00Z",
    ],
)
def test_v2_implausible_times_are_dead_letters_naming_the_value(make_v2, monkeypatch, value):
    monkeypatch.setenv("AOAI_NOW", NOW)
    result = parse_event(raw(make_v2(ExecTimeUTC=value)))
    assert isinstance(result, EventError), result
    assert result.reason.startswith("ExecTimeUTC is implausible: ")
    assert repr(value) in result.reason
    assert result.request_id is not None  # the dead letter keeps the call's id


@pytest.mark.parametrize(
    "value",
    [
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00.000+00:00",
        "2019-12-31T20:00:00-05:00",  # 2020-01-01T01:00 UTC
        "2027-03-02T00:05:00Z",  # exactly a day after the clock
        NOW,
    ],
)
def test_v2_times_at_the_plausible_bounds_are_accepted(make_v2, monkeypatch, value):
    monkeypatch.setenv("AOAI_NOW", NOW)
    assert isinstance(parse_event(raw(make_v2(ExecTimeUTC=value))), UsageEvent)


def test_the_future_bound_follows_the_business_clock(make_v2, monkeypatch):
    event = raw(make_v2(ExecTimeUTC="2027-06-01T00:00:00Z"))
    monkeypatch.setenv("AOAI_NOW", "2027-05-31T00:00:01Z")
    assert isinstance(parse_event(event), UsageEvent)
    monkeypatch.setenv("AOAI_NOW", "2027-05-30T23:59:59Z")
    err = parsed_error(event)
    assert "more than a day after now (2027-05-30T23:59:59Z)" in err.reason


def test_v1_implausible_times_are_dead_letters(make_v1, monkeypatch):
    monkeypatch.setenv("AOAI_NOW", NOW)
    for value in ("9999-12-31 23:59:59", "2001-09-09 01:46:40"):
        err = parsed_error(raw(make_v1(ExecTimeUTC=value)))
        assert err.reason.startswith("ExecTimeUTC is implausible: ") and repr(value) in err.reason
    # out of datetime's range after the offset: the earlier, more specific reason
    err = parsed_error(raw(make_v1(ExecTimeUTC="9999-12-31 23:59:59-05:00")))
    assert "ExecTimeUTC is not an ISO 8601 time in range" in err.reason


def test_v2_usage_max_int_accepted(make_v2):
    big = 2**31 - 1
    usage = {"prompt_tokens": big, "completion_tokens": 0, "total_tokens": big}
    ev = parsed_ok(raw(make_v2(Usage=usage)))
    assert ev.usage == Usage(big, 0, big, 0, 0)


def test_v2_request_logged_as_json_string_is_accepted(make_v2):
    ev = parsed_ok(raw(make_v2(Request='{"messages": [], "stream": true}')))
    assert ev.request == {"messages": [], "stream": True}


def test_v2_extra_field_is_ignored(make_v2):
    ev = parsed_ok(raw(make_v2(Custom="x")))
    assert ev.operation == "chat"


# ----------------------------------------------------------------------------- v1


def test_v1_fields_and_time_format(make_v1):
    event = make_v1()
    body = raw(event)
    ev = parsed_ok(body)
    assert ev.event_version == 1
    assert ev.request_id == v1_request_id(body)
    assert ev.exec_time == datetime(2026, 11, 5, 10, 0, 0)
    assert ev.subscription_id == "sub-test-01"
    assert ev.subscription_name == "test-subscription"
    assert ev.product_name == "openai-product"
    assert ev.user_name == "Test User"
    assert ev.user_email == "test.user@example.com"
    assert ev.gateway_region == "West Europe"
    assert ev.gateway_service_name == "apim-test"
    assert ev.api_name == "Azure OpenAI"
    assert ev.operation_id == "ChatCompletions_Create"
    assert ev.operation == "chat"
    assert ev.status_code == 200
    assert ev.is_streaming is False
    assert ev.usage is None  # read later from ResponseString by usage.resolve_usage
    assert ev.model is None  # the request names no model on AOAI
    assert ev.deployment_name is None
    assert ev.api_version is None
    assert ev.request == event["Request"]
    assert ev.response_string == event["ResponseString"]
    assert json.loads(ev.response_string)["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 20,
        "total_tokens": 50,
    }


@pytest.mark.parametrize(
    ("operation_id", "operation"),
    [
        ("ChatCompletions_Create", "chat"),
        ("Completions_Create", "completions"),
        ("embeddings_create", "embeddings"),
        ("Embeddings_Create", "embeddings"),
        ("ImageGenerations_Create", "other"),
        ("", "other"),
    ],
)
def test_v1_operation_mapping(make_v1, operation_id, operation):
    ev = parsed_ok(raw(make_v1(OperationId=operation_id)))
    assert ev.operation == operation
    assert ev.operation_id == operation_id


@pytest.mark.parametrize(
    ("stream", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), (None, False)],
)
def test_v1_is_streaming_from_request(make_v1, stream, expected):
    request = {"messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    ev = parsed_ok(raw(make_v1(Request=request)))
    assert ev.is_streaming is expected


def test_v1_no_request_is_not_streaming(make_v1):
    ev = parsed_ok(raw(make_v1(Request=None)))
    assert ev.is_streaming is False
    assert ev.request is None


def test_v1_model_from_request(make_v1):
    request = {"model": "gpt-4o", "messages": [], "stream": False}
    assert parsed_ok(raw(make_v1(Request=request))).model == "gpt-4o"


def test_v1_request_id_deterministic(make_v1):
    body = raw(make_v1())
    first, second = parsed_ok(body), parsed_ok(bytes(body))
    assert first.request_id == second.request_id
    assert first.request_id.startswith("v1:")
    assert len(first.request_id) == 43
    # surrounding whitespace (a JSONL line ending) does not change the key
    assert parsed_ok(b"  " + body + b"\r\n").request_id == first.request_id
    other = parsed_ok(raw(make_v1(ExecTimeUTC="2026-11-05 10:00:01")))
    assert other.request_id != first.request_id


def test_v1_missing_required_fields(make_v1):
    event = make_v1()
    del event["OperationId"]
    err = parsed_error(raw(event))
    assert err.reason == "v1 event missing field(s): OperationId"
    event = make_v1()
    del event["ExecTimeUTC"]
    assert parsed_error(raw(event)).reason == "v1 event missing field(s): ExecTimeUTC"


def test_v1_bad_time(make_v1):
    err = parsed_error(raw(make_v1(ExecTimeUTC="05/11/2026 10:00")))
    assert "ExecTimeUTC is not an ISO 8601 time" in err.reason


def test_v1_request_as_list_is_error(make_v1):
    err = parsed_error(raw(make_v1(Request=[{"role": "user"}])))
    assert err.reason == "Request must be an object or null, not list"


def test_v1_caller_field_as_number_is_error(make_v1):
    err = parsed_error(raw(make_v1(SubscriptionId=42)))
    assert err.reason == "SubscriptionId must be a string or null, not int"


# ----------------------------------------------------------------------------- body errors


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        (b"{not json", "not JSON"),
        (b'{"EventVersion": 2,', "not JSON"),
        (b"", "empty body"),
        (b"  \r\n\t ", "empty body"),
        (b'{"ExecTimeUTC": "\xff\xfe"}', "not UTF-8"),
        (b"[1, 2, 3]", "not a JSON object (got list)"),
        (b'"just a string"', "not a JSON object (got str)"),
        (b"42", "not a JSON object (got int)"),
        (b"null", "not a JSON object (got NoneType)"),
    ],
)
def test_bad_bodies_are_errors(body, reason_start):
    err = parsed_error(body)
    assert err.reason.startswith(reason_start), err.reason
    assert err.raw == body
    assert err.request_id is None


def test_truncated_at_200kb(make_v2):
    event = make_v2(Request={"messages": [{"role": "user", "content": "x" * 210_000}]})
    full = raw(event)
    assert len(full) > LOG_TO_EVENTHUB_LIMIT
    cut = full[: 200 * 1024]
    err = parsed_error(cut)
    assert "truncated" in err.reason
    assert "204800 bytes" in err.reason
    assert err.raw == cut


def test_short_invalid_json_is_not_called_truncated():
    err = parsed_error(b'{"a": "' + b"x" * 1000)
    assert "truncated" not in err.reason
    assert err.reason.startswith("not JSON")


def test_truncated_inside_multibyte_character_is_reported_as_truncated(make_v2):
    event = make_v2(Request={"messages": [{"role": "user", "content": "é" * 200_000}]})
    full = json.dumps(event, ensure_ascii=False).encode("utf-8")
    # find a cut at the limit that splits a 2-byte character
    cut = full[: 200 * 1024]
    if cut.decode("utf-8", "ignore").encode("utf-8") == cut:
        cut = full[: 200 * 1024 - 1]
    assert cut.decode("utf-8", "ignore").encode("utf-8") != cut  # really mid-character
    assert "truncated" in parsed_error(cut).reason


# ----------------------------------------------------------------------------- v2 field errors


@pytest.mark.parametrize(
    "field",
    [
        "EventVersion",
        "RequestId",
        "ExecTimeUTC",
        "Operation",
        "IsStreaming",
        "StatusCode",
    ],
)
def test_v2_missing_required_field(make_v2, field):
    event = make_v2()
    del event[field]
    err = parsed_error(raw(event))
    if field == "EventVersion":  # without it, a RequestId marks a broken v2 event
        assert "no EventVersion" in err.reason
    else:
        assert err.reason == f"missing field(s): {field}"


def test_v2_null_required_fields_are_missing(make_v2):
    err = parsed_error(raw(make_v2(Operation=None, StatusCode=None)))
    assert err.reason == "missing field(s): Operation, StatusCode"


def test_v2_error_carries_request_id(make_v2):
    event = make_v2(StatusCode="200")
    err = parsed_error(raw(event))
    assert err.request_id == event["RequestId"]


@pytest.mark.parametrize(
    ("overrides", "reason_part"),
    [
        ({"IsStreaming": "yes"}, "IsStreaming must be true or false"),
        ({"IsStreaming": 1}, "IsStreaming must be true or false"),
        ({"StatusCode": "200"}, "StatusCode must be an HTTP status code"),
        ({"StatusCode": True}, "StatusCode must be an HTTP status code"),
        ({"StatusCode": 42}, "StatusCode must be an HTTP status code"),
        ({"StatusCode": 600}, "StatusCode must be an HTTP status code"),
        ({"StatusCode": 200.5}, "StatusCode must be an HTTP status code"),
        ({"Usage": {"prompt_tokens": -1}}, "Usage.prompt_tokens out of range: -1"),
        ({"Usage": {"prompt_tokens": "5"}}, "Usage.prompt_tokens must be an integer, not str"),
        ({"Usage": {"prompt_tokens": 2**40}}, f"Usage.prompt_tokens out of range: {2**40}"),
        ({"Usage": {"prompt_tokens": 2**31}}, "Usage.prompt_tokens out of range"),
        ({"Usage": {"prompt_tokens": 1.5}}, "Usage.prompt_tokens must be an integer, not float"),
        ({"Usage": {"completion_tokens": True}}, "Usage.completion_tokens must be an integer"),
        ({"Usage": {"cached_tokens": -3}}, "Usage.cached_tokens out of range: -3"),
        ({"Usage": [1, 2]}, "Usage must be an object or null, not list"),
        ({"Usage": "100"}, "Usage must be an object or null, not str"),
        ({"Operation": "chatx"}, "Operation must be one of"),
        ({"Operation": "Chat"}, "Operation must be one of"),
        ({"Operation": 1}, "Operation must be one of"),
        ({"RequestId": ""}, "RequestId must be a non-empty string of at most 64 characters"),
        ({"RequestId": "   "}, "RequestId must be a non-empty string of at most 64 characters"),
        ({"RequestId": "a" * 65}, "RequestId must be a non-empty string of at most 64 characters"),
        ({"RequestId": 12345}, "RequestId must be a non-empty string of at most 64 characters"),
        ({"SubscriptionId": 42}, "SubscriptionId must be a string or null, not int"),
        ({"UserEmail": ["a@b.c"]}, "UserEmail must be a string or null, not list"),
        ({"OperationId": True}, "OperationId must be a string or null, not bool"),
        ({"DeploymentName": 4}, "DeploymentName must be a string or null, not int"),
        ({"Model": {"name": "gpt-4o"}}, "Model must be a string or null, not dict"),
        ({"ResponseString": 1}, "ResponseString must be a string or null, not int"),
        ({"Request": [{"role": "user"}]}, "Request must be an object or null, not list"),
        ({"Request": "not json"}, "Request is a string that is not JSON"),
        ({"ExecTimeUTC": "yesterday"}, "ExecTimeUTC is not an ISO 8601 time"),
        ({"ExecTimeUTC": 1793786400}, "ExecTimeUTC must be a string, not int"),
        ({"EventVersion": 3}, "unsupported EventVersion 3"),
        ({"EventVersion": "2"}, "unsupported EventVersion '2'"),
        ({"EventVersion": True}, "unsupported EventVersion True"),
        ({"EventVersion": 1}, "unsupported EventVersion 1"),
    ],
)
def test_v2_wrong_types_are_errors(make_v2, overrides, reason_part):
    err = parsed_error(raw(make_v2(**overrides)))
    assert reason_part in err.reason, err.reason


@pytest.mark.parametrize("value", [64, 1])
def test_v2_request_id_length_limit_inclusive(make_v2, value):
    ev = parsed_ok(raw(make_v2(RequestId="r" * value)))
    assert ev.request_id == "r" * value


def test_v2_request_id_is_trimmed(make_v2):
    assert parsed_ok(raw(make_v2(RequestId=" abc "))).request_id == "abc"


def test_request_id_without_event_version(make_v2):
    event = make_v2()
    del event["EventVersion"]
    err = parsed_error(raw(event))
    assert err.reason == "has RequestId but no EventVersion (v2 events must carry EventVersion 2)"
    assert err.request_id == event["RequestId"]


@pytest.mark.parametrize("bad", [False, ""])
def test_v2_falsy_non_integer_usage_count_is_error(make_v2, bad):
    usage = {"prompt_tokens": bad, "completion_tokens": 50, "total_tokens": 150}
    err = parse_event(raw(make_v2(Usage=usage)))
    assert isinstance(err, EventError)


# ----------------------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_v2_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_valid_draft_2020_12():
    schema = load_v2_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_properties_are_v2_fields_in_order():
    assert tuple(load_v2_schema()["properties"]) == V2_FIELDS


def test_schema_usage_properties_are_usage_fields():
    usage = load_v2_schema()["properties"]["Usage"]
    assert tuple(usage["properties"]) == USAGE_FIELDS


def test_schema_required_fields_are_parser_required_plus_usage():
    # the parser requires the same fields; Usage is required by the schema (it may be null)
    assert load_v2_schema()["required"] == [
        "EventVersion",
        "RequestId",
        "ExecTimeUTC",
        "Operation",
        "IsStreaming",
        "StatusCode",
        "Usage",
    ]


def test_factory_event_validates(validator, make_v2):
    validator.validate(make_v2())
    validator.validate(make_v2(Usage=None, Request={"messages": []}))


def test_sample_events_validate_and_parse(validator):
    events = list(v2_reported_events(200))
    assert len(events) == 200
    for event in events:
        validator.validate(event)
        ev = parsed_ok(raw(event))
        assert ev.request_id == event["RequestId"]
        assert ev.usage is not None
        assert ev.usage.as_dict() == event["Usage"]


SCHEMA_INVALID: list[tuple[str, Any]] = [
    ("EventVersion", 3),
    ("EventVersion", "2"),
    ("EventVersion", True),
    ("RequestId", ""),
    ("RequestId", "a" * 65),
    ("RequestId", 7),
    ("ExecTimeUTC", 1793786400),
    ("ExecTimeUTC", "yesterday"),
    ("Operation", "chatx"),
    ("Operation", None),
    ("IsStreaming", "yes"),
    ("IsStreaming", 1),
    ("IsStreaming", None),
    ("StatusCode", "200"),
    ("StatusCode", True),
    ("StatusCode", 42),
    ("StatusCode", 600),
    ("StatusCode", 200.5),
    ("StatusCode", None),
    *((field, 1) for field in CALLER_FIELDS),
    ("DeploymentName", 1),
    ("ApiVersion", 20241021),
    ("Model", ["gpt-4o"]),
    ("Usage", [100, 50]),
    ("Usage", "150"),
    ("Usage", {"prompt_tokens": -1, "completion_tokens": 0, "total_tokens": 0}),
    ("Usage", {"prompt_tokens": "5", "completion_tokens": 0, "total_tokens": 5}),
    ("Usage", {"prompt_tokens": 2**40, "completion_tokens": 0, "total_tokens": 2**40}),
    ("Usage", {"prompt_tokens": 1.5, "completion_tokens": 0, "total_tokens": 1}),
    ("Request", [1]),
    ("Request", 5),
    ("ResponseString", {"a": 1}),
]


@pytest.mark.parametrize(("field", "value"), SCHEMA_INVALID)
def test_schema_invalid_typed_fields_are_rejected_by_both(validator, make_v2, field, value):
    event = make_v2(**{field: value})
    assert not validator.is_valid(event)
    assert isinstance(parse_event(raw(event)), EventError)


# ----------------------------------------------------------------------------- URL paths


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/openai/deployments/x/chat/completions", "chat"),
        ("/openai/deployments/x/chat/completions?api-version=2024-10-21", "chat"),
        ("/openai/deployments/x/chat/completions/", "chat"),
        ("/OpenAI/Deployments/X/Chat/Completions", "chat"),
        ("/openai/deployments/x/completions", "completions"),
        ("/openai/deployments/x/completions?api-version=2024-10-21", "completions"),
        ("/openai/deployments/x/embeddings", "embeddings"),
        ("/openai/deployments/x/embeddings?api-version=2024-10-21", "embeddings"),
        ("/openai/v1/chat/completions", "chat"),
        ("/openai/v1/embeddings", "embeddings"),
        ("/openai/v1/responses", "responses"),
        ("/openai/v1/responses/resp_123", "responses"),
        ("/openai/responses?api-version=2025-04-01-preview", "responses"),
        ("/openai/deployments/x/images/generations", "other"),
        ("/openai/deployments/x/audio/transcriptions", "other"),
        ("/openai/models", "other"),
        ("/", "other"),
        ("", "other"),
    ],
)
def test_operation_from_path(path, operation):
    assert operation_from_path(path) == operation
