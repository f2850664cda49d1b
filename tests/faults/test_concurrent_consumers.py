"""Four consumer processes ingest overlapping batches into one PostgreSQL database at once.

Each call sits in the event logs of 2 or 3 of the 4 processes, in a different (shuffled) order
in each, so the processes race to insert the same ``RequestId``s in different orders: with
``INSERT … ON CONFLICT DO NOTHING`` a racing insert waits for the other transaction, and two
batches waiting on each other are a deadlock that PostgreSQL breaks by aborting one of them.
That batch fails, ``consume`` retries it (not checkpointed), and the retry finds the rows
stored. Whatever the interleaving: rows = distinct calls, each call's tokens once, every log
fully checkpointed. The number of retries is recorded (it depends on the timing).
"""

from __future__ import annotations

import multiprocessing
import queue
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import new_v2
from fault_helpers import (
    Call,
    db_tokens_by_id,
    db_totals,
    dead_letters,
    expected_totals,
    fill_log,
    random_usage,
    v2_call,
)
from pg import PgServer

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.pipeline.service import ensure_db

PROCESSES = 4
CALLS = 1500
BATCH = 100

pytestmark = pytest.mark.postgres


def _consume_worker(
    url: str, log_dir: str, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """One consumer process: wait for the others, drain its own log into the shared database."""
    from aoai_helpers.eventlog.eventhub import LocalEventLog
    from aoai_helpers.pipeline.consume import consume
    from aoai_helpers.pipeline.ingest import Ingestor

    engine = engine_from_url(url)
    log = LocalEventLog(log_dir, fsync=False)
    consumer = log.consumer()
    try:
        barrier.wait(60)
        stats = consume(
            consumer,
            Ingestor(engine),
            batch_size=BATCH,
            max_wait=0.0,
            idle_exit=True,
            retry_initial=0.05,
            retry_max=0.5,
        )
        results.put(
            {
                "log": log_dir,
                "events": stats.events,
                "stored": stats.result.stored,
                "duplicates": stats.result.duplicates,
                "dead": stats.result.dead_lettered,
                "retries": stats.retries,
            }
        )
    finally:
        consumer.close()
        engine.dispose()


def test_overlapping_consumers_store_each_call_once(
    pg_server: PgServer,
    tmp_path: Path,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = pg_server.new_database()
    engine = engine_from_url(url)
    ensure_db(engine)
    rng = random.Random(4242)
    calls: list[Call] = [v2_call(new_v2(Usage=random_usage(rng))) for _ in range(CALLS)]
    per_process: list[list[Call]] = [[] for _ in range(PROCESSES)]
    for call in calls:
        for p in rng.sample(range(PROCESSES), rng.choice((2, 3))):
            per_process[p].append(call)
    logs = []
    for p, mine in enumerate(per_process):
        rng.shuffle(mine)  # a different order in every process
        logs.append(fill_log(tmp_path / f"log{p}", [c.body for c in mine]))
    delivered = sum(len(mine) for mine in per_process)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_consume_worker, args=(url, str(log.directory), barrier, results))
        for log in logs
    ]
    for proc in procs:
        proc.start()
    got: list[dict[str, int]] = []
    try:
        for _ in procs:
            got.append(results.get(timeout=90))
    except queue.Empty:
        pytest.fail(f"only {len(got)} of {PROCESSES} consumer processes reported")
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES

    stored = sum(r["stored"] for r in got)
    duplicates = sum(r["duplicates"] for r in got)
    retries = sum(r["retries"] for r in got)
    record_property("retries", retries)
    assert sum(r["events"] for r in got) == delivered
    assert stored == CALLS  # each call stored by exactly one process
    assert stored + duplicates == delivered  # every other delivery counted as a duplicate
    assert sum(r["dead"] for r in got) == 0 and dead_letters(engine) == []
    assert db_totals(engine) == expected_totals(calls)
    assert db_tokens_by_id(engine) == {
        c.request_id: (c.prompt, c.completion, c.total) for c in calls
    }
    assert all(log.checkpoint_of() == log.last_sequence_number() for log in logs)
    assert retries >= 0  # recorded above; > 0 only when a deadlock / conflict hit a batch
    engine.dispose()
    with capsys.disabled():
        per = ", ".join(f"{r['stored']}/{r['duplicates']}/{r['retries']}" for r in got)
        print(
            f"\n[concurrent consumers] {PROCESSES} processes, {delivered} deliveries of "
            f"{CALLS} calls: stored {stored}, duplicates {duplicates}, retries {retries} "
            f"(per process stored/duplicates/retries: {per})"
        )
