"""Poison events: a fuzzed corpus of bad bodies interleaved with good events, in batches.

Every bad body must land in ``IngestDeadLetter`` exactly once (also when redelivered), with a
reason that names the problem and its raw bytes kept exactly; every good event around it must
be stored; the batch must never fail because of one body. The corpus (seeded, reproducible):
truncated JSON, a wrong type for each field, ~1 MB bodies, non-UTF-8 bytes, JSON nested 10,000
levels deep, unknown ``EventVersion``s, empty bodies, JSON arrays and scalars.

``test_bodies_that_break_the_batch`` lists inputs that currently make ``ingest_batch`` raise
(the whole batch fails and a consumer retries it forever) instead of dead-lettering: real bugs,
kept as regression tests (they once broke the whole batch).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import new_v1, new_v2
from fault_helpers import (
    Call,
    db_totals,
    dead_letters,
    encode,
    expected_totals,
    random_usage,
    v1_call,
    v1_response,
    v2_call,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from aoai_helpers.core.events import V2_FIELDS, EventError, UsageEvent, parse_event
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent

BOTH_DATABASES = True
MB = 1 << 20


@dataclass(frozen=True, slots=True)
class Bad:
    """A poison body, its category and a piece of text its dead-letter reason must contain."""

    category: str
    body: bytes
    reason_has: str


WRONG_VALUES: tuple[Any, ...] = (1, 1.5, True, [], {}, [1, "a"], {"x": 1})
_V2_STRING_FIELDS = (
    "GatewayRegion",
    "GatewayServiceName",
    "SubscriptionId",
    "SubscriptionName",
    "ProductName",
    "UserName",
    "UserEmail",
    "ApiName",
    "OperationId",
    "DeploymentName",
    "ApiVersion",
    "Model",
    "ResponseString",
)


def _wrong_types(rng: random.Random) -> list[Bad]:
    """A wrong type (or value) for every field that has a type; the reason names the field."""
    bad: list[Bad] = []
    for name in _V2_STRING_FIELDS:
        for value in rng.sample(WRONG_VALUES, 2):
            bad.append(Bad("wrong_type", encode(new_v2(**{name: value})), name))
    specific: list[tuple[str, Any, str]] = [
        ("RequestId", 12345, "RequestId"),
        ("RequestId", "", "RequestId"),
        ("RequestId", "x" * 65, "RequestId"),
        ("RequestId", ["a"], "RequestId"),
        ("ExecTimeUTC", 1793786400, "ExecTimeUTC"),
        ("ExecTimeUTC", "yesterday", "ExecTimeUTC"),
        ("ExecTimeUTC", "2026-13-45T99:00:00Z", "ExecTimeUTC"),
        ("ExecTimeUTC", {"t": 1}, "ExecTimeUTC"),
        ("Operation", "delete", "Operation"),
        ("Operation", 5, "Operation"),
        ("IsStreaming", "true", "IsStreaming"),
        ("IsStreaming", 1, "IsStreaming"),
        ("StatusCode", "200", "StatusCode"),
        ("StatusCode", 99, "StatusCode"),
        ("StatusCode", 600, "StatusCode"),
        ("StatusCode", 200.0, "StatusCode"),
        ("StatusCode", 2**70, "StatusCode"),
        ("Usage", [], "Usage"),
        ("Usage", "150", "Usage"),
        ("Usage", {"prompt_tokens": "100"}, "Usage.prompt_tokens"),
        ("Usage", {"prompt_tokens": -1}, "Usage.prompt_tokens"),
        ("Usage", {"completion_tokens": 1.5}, "Usage.completion_tokens"),
        ("Usage", {"total_tokens": True}, "Usage.total_tokens"),
        ("Usage", {"cached_tokens": 2**40}, "Usage.cached_tokens"),
        ("Usage", {"reasoning_tokens": None, "prompt_tokens": [1]}, "Usage.prompt_tokens"),
        ("Request", 5, "Request"),
        ("Request", [1, 2], "Request"),
        ("Request", "not json at all", "Request"),
    ]
    for name, value, expect in specific:
        bad.append(Bad("wrong_type", encode(new_v2(**{name: value})), expect))
    for name in ("RequestId", "ExecTimeUTC", "Operation", "IsStreaming", "StatusCode"):
        bad.append(Bad("missing_field", encode(new_v2(**{name: None})), name))
        event = new_v2()
        del event[name]
        bad.append(Bad("missing_field", encode(event), name))
    # v1 events
    for name in ("UserName", "SubscriptionId", "OperationId", "ApiName"):
        bad.append(Bad("wrong_type", encode(new_v1(**{name: rng.choice(WRONG_VALUES)})), name))
    bad.append(Bad("wrong_type", encode(new_v1(ResponseString={"usage": 1})), "ResponseString"))
    bad.append(Bad("wrong_type", encode(new_v1(Request=7)), "Request"))
    bad.append(Bad("wrong_type", encode(new_v1(ExecTimeUTC="not a time")), "ExecTimeUTC"))
    bad.append(Bad("missing_field", encode(new_v1(ExecTimeUTC=None)), "ExecTimeUTC"))
    bad.append(Bad("missing_field", encode(new_v1(OperationId=None)), "OperationId"))
    bad.append(Bad("wrong_type", encode({**new_v1(), "RequestId": "r-1"}), "EventVersion"))
    return bad


def _truncated(rng: random.Random) -> list[Bad]:
    bad = []
    for _ in range(12):
        whole = encode(new_v2() if rng.random() < 0.6 else new_v1())
        bad.append(Bad("truncated", whole[: rng.randint(1, len(whole) - 1)], "not JSON"))
    # what APIM's log-to-eventhub does to a message over 200 KB: cut, no longer JSON
    big = encode(new_v2(Request={"messages": [{"role": "user", "content": "w " * 150_000}]}))
    bad.append(Bad("truncated", big[: 200 * 1024], "truncated: 204800 bytes"))
    return bad


def _huge(rng: random.Random) -> list[Bad]:
    """About 1 MB each (Event Hubs' largest event)."""
    noise = bytes(rng.choice(b'abcdefghij {}[]:,"0123456789') for _ in range(MB))
    return [
        # no reason can say more than "big and broken": the reason names the size
        Bad("huge", noise, f"{MB} bytes"),
        Bad("huge", encode(new_v2(Request="x" * MB)), "Request"),
        Bad("huge", encode(new_v2(StatusCode="2" * MB)), "StatusCode"),
        Bad("huge", b"[" + b",".join([b"1"] * (MB // 2)) + b"]", "not a JSON object (got list)"),
    ]


def _non_utf8(rng: random.Random) -> list[Bad]:
    text = json.dumps(new_v2(UserName="Zoë Ångström"), ensure_ascii=False)
    v2 = text.encode("utf-8")
    latin1 = text.encode("latin-1")  # what a policy that wrote Latin-1 would send
    assert latin1 != v2
    at = rng.randint(10, len(v2) - 10)
    return [
        Bad("non_utf8", latin1, "not UTF-8"),
        Bad("non_utf8", v2.decode().encode("utf-16"), "not UTF-8"),
        Bad("non_utf8", v2[:at] + b"\xff" + v2[at:], "not UTF-8"),
        Bad("non_utf8", b'{"EventVersion":2,"RequestId":"\xc0\xaf"}', "not UTF-8"),
        Bad("non_utf8", b'{"a":"\xed\xa0\x80"}', "not UTF-8"),  # a UTF-16 surrogate as UTF-8
        Bad("non_utf8", bytes(rng.randrange(128, 256) for _ in range(64)), "not UTF-8"),
    ]


def _nested() -> list[Bad]:
    depth = 10_000
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    event = encode(new_v2(Request={"messages": "PLACEHOLDER"}))
    return [
        Bad("nested", b"[" * depth + b"]" * depth, "depth"),
        Bad("nested", inner, "depth"),
        Bad("nested", event.replace(b'"PLACEHOLDER"', b"[" * depth + b"]" * depth), "depth"),
        Bad("nested", b"[" * depth, "not JSON"),  # never closed
    ]


def _versions() -> list[Bad]:
    return [
        Bad("version", encode(new_v2(EventVersion=v)), "unsupported EventVersion")
        for v in (3, 1, 0, -1, 2.5, "2", None, True, [2], {"v": 2}, 2**63)
    ]


def _empty() -> list[Bad]:
    return [Bad("empty", body, "empty body") for body in (b"", b" ", b"\n", b"\t \r\n  ")]


def _not_objects() -> list[Bad]:
    cases = {
        b"[]": "list",
        b"[" + encode(new_v2()) + b"]": "list",  # a valid event, wrapped in an array
        b"42": "int",
        b"-1.5e3": "float",
        b'"a string"': "str",
        b"null": "NoneType",
        b"true": "bool",
        b"false": "bool",
    }
    return [Bad("not_object", body, f"not a JSON object (got {t})") for body, t in cases.items()]


def _corpus(rng: random.Random) -> list[Bad]:
    bad = [
        *_wrong_types(rng),
        *_truncated(rng),
        *_huge(rng),
        *_non_utf8(rng),
        *_nested(),
        *_versions(),
        *_empty(),
        *_not_objects(),
    ]
    unique: dict[str, Bad] = {}
    for b in bad:
        unique.setdefault(hashlib.sha256(b.body).hexdigest(), b)
    assert len(unique) == len(bad), "the corpus must hold distinct bodies"
    return bad


def _good(rng: random.Random, n: int) -> list[Call]:
    calls: list[Call] = []
    for i in range(n):
        if i % 4 == 3:
            response, usage = v1_response(rng)
            event = new_v1(ExecTimeUTC=f"2026-11-05 10:{i // 60:02d}:{i % 60:02d}")
            calls.append(v1_call({**event, "ResponseString": response}, usage))
        else:
            calls.append(v2_call(new_v2(Usage=random_usage(rng))))
    # good events can be huge too: a ~1 MB prompt with reported usage is billed as reported
    big = new_v2(
        Usage=random_usage(rng), Request={"messages": [{"role": "user", "content": "y" * MB}]}
    )
    calls.append(v2_call(big))
    return calls


def test_poison_is_dead_lettered_once_and_good_events_around_it_are_stored(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20261105)
    bad = _corpus(rng)
    good = _good(rng, 150)
    mixed: list[Bad | Call] = [*bad, *good]
    rng.shuffle(mixed)
    batches = [mixed[i : i + 25] for i in range(0, len(mixed), 25)]
    ingestor = Ingestor(engine)
    sources: dict[bytes, str] = {}
    total = BatchResult()
    for b, batch in enumerate(batches):
        raw = []
        for i, item in enumerate(batch):
            source = f"poison:{b}:{i}"
            sources.setdefault(item.body, source)
            raw.append(RawEvent(item.body, source))
        total.add(ingestor.ingest_batch(raw))
    assert (total.received, total.stored) == (len(mixed), len(good))
    assert (total.dead_lettered, total.duplicates) == (len(bad), 0)
    assert db_totals(engine) == expected_totals(good)

    stored = {row["RawSha256"]: row for row in dead_letters(engine)}
    assert len(stored) == len(bad)  # one row per bad body
    for item in bad:
        row = stored[hashlib.sha256(item.body).hexdigest()]
        assert bytes(row["RawBody"]) == item.body  # the raw bytes, exactly
        assert row["RawSize"] == len(item.body)
        assert row["Source"] == sources[item.body]
        assert row["Reason"].strip(), item
        assert item.reason_has in row["Reason"], (item.category, row["Reason"], item.body[:80])

    # a redelivery of every batch changes nothing: each bad body stays dead-lettered once
    again = BatchResult()
    for b, batch in enumerate(batches):
        again.add(ingestor.ingest_batch([RawEvent(x.body, f"again:{b}") for x in batch]))
    assert (again.stored, again.duplicates, again.dead_lettered) == (0, len(good), len(bad))
    assert len(dead_letters(engine)) == len(bad)
    assert db_totals(engine) == expected_totals(good)
    with capsys.disabled():
        counts = Counter(b.category for b in bad)
        print(
            f"\n[poison {engine.dialect.name}] {len(bad)} bad bodies {dict(counts)}, "
            f"{len(good)} good in {len(batches)} batches: {total.stored} stored, "
            f"{total.dead_lettered} dead-lettered; redelivered: {again.duplicates} duplicates, "
            f"{len(dead_letters(engine))} dead letters"
        )


# ----------------------------------------------------------------------------- regressions
# Bodies the fuzzing found breaking a whole batch (and so, in consume(), blocking the log
# forever) before events.py learned to dead-letter them.

M = 2**31 - 1
REGRESSIONS: dict[str, tuple[bytes, str]] = {
    # name: (body, what the dead letter's reason must say)
    "v2 time offset out of range": (
        encode(new_v2(ExecTimeUTC="0001-01-01T00:00:00+05:00")),
        "ExecTimeUTC is not an ISO 8601 time in range",
    ),
    "v1 time offset out of range": (
        encode(new_v1(ExecTimeUTC="9999-12-31 23:59:59-05:00")),
        "ExecTimeUTC is not an ISO 8601 time in range",
    ),
    "NUL in a string field": (
        encode(new_v2(SubscriptionName="Fin\u0000ance")),
        "SubscriptionName contains a NUL character",
    ),
    "NUL in the RequestId of a dead letter": (
        encode(new_v2(RequestId="r\u0000x", StatusCode="200")),
        "RequestId contains a NUL character",
    ),
    "total tokens over int32": (
        encode(new_v2(Usage={"prompt_tokens": M, "completion_tokens": M})),
        "Usage.total_tokens out of range",
    ),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_bodies_that_once_broke_the_batch_are_dead_lettered(name: str, engine: Engine) -> None:
    body, reason = REGRESSIONS[name]
    good = [v2_call(new_v2(Usage={"prompt_tokens": 7, "completion_tokens": 5})) for _ in range(3)]
    batch = [
        RawEvent(good[0].body, "g0"),
        RawEvent(body, "bad"),
        *(RawEvent(g.body, "g") for g in good[1:]),
    ]
    result = Ingestor(engine).ingest_batch(batch)  # must not raise
    assert (result.stored, result.dead_lettered) == (3, 1)
    totals = db_totals(engine)
    assert totals.rows == 3 and totals.total < 2**31  # every stored count fits the SQL int columns
    (dead,) = dead_letters(engine)
    assert reason in dead["Reason"], dead["Reason"]


# ----------------------------------------------------------------------------- property tests

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_parse_event_never_raises_on_bytes(body: bytes) -> None:
    out = parse_event(body)
    if isinstance(out, EventError):
        assert out.reason.strip() and out.raw == body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(V2_FIELDS), _json, max_size=6),
    st.sets(st.sampled_from(V2_FIELDS), max_size=3),
)
def test_parse_event_never_raises_on_mangled_v2_events(
    replace: dict[str, Any], drop: set[str]
) -> None:
    event = {k: v for k, v in new_v2(**replace).items() if k not in drop}
    body = encode(event)
    out = parse_event(body)
    assert isinstance(out, UsageEvent | EventError)
    if isinstance(out, EventError):
        assert out.reason.strip() and out.raw == body
