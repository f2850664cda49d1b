"""Shared by the fault tests: events with varied usage, database totals, waiting, the log."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from aoai_helpers.core.events import v1_request_id
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import dead_letter, token_table
from aoai_helpers.eventlog.eventhub import LocalEventLog

Event = dict[str, Any]


def encode(event: Event | bytes) -> bytes:
    """Compact UTF-8 JSON, as the gateway sends it (``bytes`` pass through)."""
    if isinstance(event, bytes):
        return event
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def random_usage(rng: random.Random) -> dict[str, int]:
    """A v2 ``Usage`` object with varied counts (so that token sums mean something)."""
    prompt, completion = rng.randint(1, 5000), rng.randint(0, 2000)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }


def v1_response(rng: random.Random) -> tuple[str, dict[str, int]]:
    """A v1 ``ResponseString`` (non-streamed chat body) with varied usage, and that usage."""
    prompt, completion = rng.randint(1, 3000), rng.randint(1, 1000)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    body = {
        "id": f"chatcmpl-{rng.getrandbits(64):016x}",
        "object": "chat.completion",
        "created": 1793786400,
        "model": "gpt-4o-2024-11-20",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
        "usage": usage,
    }
    return json.dumps(body), usage


@dataclass(frozen=True, slots=True)
class Call:
    """One distinct call: its encoded body, its idempotency key and the tokens it must bill."""

    body: bytes
    request_id: str
    prompt: int
    completion: int
    total: int


def v2_call(event: Event) -> Call:
    usage = event["Usage"]
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return Call(
        encode(event),
        event["RequestId"],
        prompt,
        completion,
        usage.get("total_tokens") or prompt + completion,
    )


def v1_call(event: Event, usage: dict[str, int]) -> Call:
    body = encode(event)
    return Call(
        body,
        v1_request_id(body),
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )


@dataclass(frozen=True, slots=True)
class Totals:
    """What a token table holds (or must hold): rows, distinct ids and token sums."""

    rows: int
    distinct: int
    prompt: int
    completion: int
    total: int


def expected_totals(calls: Iterable[Call]) -> Totals:
    unique = {c.request_id: c for c in calls}
    return Totals(
        len(unique),
        len(unique),
        sum(c.prompt for c in unique.values()),
        sum(c.completion for c in unique.values()),
        sum(c.total for c in unique.values()),
    )


def db_totals(engine: Engine) -> Totals:
    t = token_table.c
    stmt = select(
        func.count(),
        func.count(t.RequestId.distinct()),
        func.coalesce(func.sum(t.PromptTokens), 0),
        func.coalesce(func.sum(t.CompletionTokens), 0),
        func.coalesce(func.sum(t.TotalTokens), 0),
    ).select_from(token_table)
    with transaction(engine) as conn:
        row = conn.execute(stmt).one()
    return Totals(*(int(v) for v in row))


def db_tokens_by_id(engine: Engine) -> dict[str, tuple[int, int, int]]:
    """RequestId → (prompt, completion, total) of every stored row."""
    t = token_table.c
    stmt = select(t.RequestId, t.PromptTokens, t.CompletionTokens, t.TotalTokens)
    with transaction(engine) as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(stmt)}


def dead_letters(engine: Engine) -> list[dict[str, Any]]:
    with transaction(engine) as conn:
        rows = conn.execute(select(dead_letter).order_by(dead_letter.c.Id)).mappings().all()
    return [dict(r) for r in rows]


def fill_log(directory: Path, bodies: Sequence[bytes]) -> LocalEventLog:
    """A fresh local event log (no fsync: tests) holding ``bodies``, in order."""
    log = LocalEventLog(directory, fsync=False)
    with log.producer() as producer:
        for i in range(0, len(bodies), 500):
            producer.send(bodies[i : i + 500])
    return log
