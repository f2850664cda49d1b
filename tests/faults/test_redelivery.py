"""Redelivery storms: every batch delivered 1-5 times, in a shuffled order, some redeliveries
straddling two original batches (a checkpoint taken at another position) — billed once.

50 batches of 20 distinct calls (about 70 % v2, 30 % v1: v1 ids are content hashes) go through
``Ingestor.ingest_batch`` on SQLite and PostgreSQL. Rows = distinct calls, each call's tokens
exactly once, and the duplicates counted = events delivered - distinct calls.
"""

from __future__ import annotations

import random

import pytest
from conftest import new_v1, new_v2
from fault_helpers import (
    Call,
    db_tokens_by_id,
    db_totals,
    dead_letters,
    expected_totals,
    random_usage,
    v1_call,
    v1_response,
    v2_call,
)
from sqlalchemy.engine import Engine

from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent

BOTH_DATABASES = True
BATCHES = 50
PER_BATCH = 20


def _batches(rng: random.Random) -> list[list[Call]]:
    batches: list[list[Call]] = []
    n = 0
    for _ in range(BATCHES):
        batch = []
        for _ in range(PER_BATCH):
            n += 1
            if rng.random() < 0.7:
                batch.append(v2_call(new_v2(Usage=random_usage(rng))))
            else:
                response, usage = v1_response(rng)
                when = f"2026-11-{1 + n // 3600:02d} {n // 60 % 24:02d}:{n % 60:02d}:00"
                batch.append(v1_call(new_v1(ExecTimeUTC=when, ResponseString=response), usage))
        batches.append(batch)
    return batches


def _deliveries(rng: random.Random, batches: list[list[Call]]) -> list[list[Call]]:
    """Each batch 1-5 times (order inside shuffled), plus straddling redeliveries; shuffled."""
    out: list[list[Call]] = []
    for batch in batches:
        for _ in range(rng.randint(1, 5)):
            out.append(rng.sample(batch, len(batch)))
    for i in rng.sample(range(BATCHES - 1), 10):
        cut = rng.randint(1, PER_BATCH - 1)
        out.append(batches[i][cut:] + batches[i + 1][:cut])
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("seed", [11, 12])
def test_redelivery_storm_bills_every_call_once(
    seed: int, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    batches = _batches(rng)
    deliveries = _deliveries(rng, batches)
    distinct = [c for batch in batches for c in batch]
    assert len({c.request_id for c in distinct}) == BATCHES * PER_BATCH  # all distinct calls
    delivered = sum(len(d) for d in deliveries)

    ingestor = Ingestor(engine)
    total = BatchResult()
    for n, delivery in enumerate(deliveries):
        total.add(ingestor.ingest_batch([RawEvent(c.body, f"storm:{n}") for c in delivery]))

    assert total.received == delivered
    assert total.stored == len(distinct)
    assert total.duplicates == delivered - len(distinct)
    assert total.dead_lettered == 0 and dead_letters(engine) == []
    assert db_totals(engine) == expected_totals(distinct)
    assert db_tokens_by_id(engine) == {
        c.request_id: (c.prompt, c.completion, c.total) for c in distinct
    }
    with capsys.disabled():
        print(
            f"\n[redelivery {engine.dialect.name} seed {seed}] {len(deliveries)} deliveries, "
            f"{delivered} events delivered, {len(distinct)} distinct: stored {total.stored}, "
            f"duplicates {total.duplicates}"
        )
