"""The database goes away while ``consume()`` runs: nothing lost, nothing billed twice.

(a) PostgreSQL is stopped (``pg_ctl stop -m immediate``: a crash, open connections cut) in the
middle of a run and started again a few seconds later. The consumer keeps the failing batch,
retries it with its backoff, never checkpoints it early, and finishes the log once the server
is back.

(b) SQLite: another writer holds ``BEGIN IMMEDIATE`` on the same file for ~2 s. With the
engine's default ``busy_timeout`` (30 s) the write waits for the lock; with a short one
(100 ms) it fails with "database is locked" and ``consume`` retries the batch.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import new_v2
from fault_helpers import (
    Call,
    db_totals,
    dead_letters,
    expected_totals,
    fill_log,
    random_usage,
    v2_call,
)
from pg import PgServer
from sqlalchemy import event
from sqlalchemy.engine import Engine
from waiting import wait_until

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.eventlog.eventhub import LocalEventLog
from aoai_helpers.pipeline.consume import ConsumeStats, consume
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor
from aoai_helpers.pipeline.service import ensure_db

N = 2000
BATCH = 100


def _calls(seed: int) -> list[Call]:
    rng = random.Random(seed)
    return [v2_call(new_v2(Usage=random_usage(rng))) for _ in range(N)]


@dataclass
class ConsumerThread:
    """``consume()`` over ``log`` in a thread; records when each batch committed."""

    log: LocalEventLog
    engine: Engine
    pause: float = 0.0  # seconds slept after each committed batch (to make the run last)
    stop: threading.Event = field(default_factory=threading.Event)
    batch_times: list[float] = field(default_factory=list)
    stats: ConsumeStats | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-consumer", daemon=True)

    def _on_batch(self, _result: BatchResult) -> None:
        self.batch_times.append(time.monotonic())
        if self.pause:
            time.sleep(self.pause)

    def _run(self) -> None:
        consumer = self.log.consumer()
        try:
            self.stats = consume(
                consumer,
                Ingestor(self.engine),
                batch_size=BATCH,
                max_wait=0.05,
                stop=self.stop,
                on_batch=self._on_batch,
                retry_initial=0.1,
                retry_max=0.5,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> ConsumeStats:
        """Wait for the whole log to be checkpointed, then stop the loop; its stats."""
        try:
            wait_until(
                lambda: (
                    self.log.checkpoint_of() >= self.log.last_sequence_number()
                    or self.error is not None
                ),
                60,
                "the consumer to checkpoint the whole log",
            )
        finally:
            self.stop.set()
            self._thread.join(60)
        assert self.error is None, self.error
        assert self.stats is not None
        return self.stats


@pytest.fixture
def pg_engine(pg_server: PgServer) -> Iterator[Engine]:
    engine = engine_from_url(pg_server.new_database())
    ensure_db(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_stopped_mid_run_loses_and_duplicates_nothing(
    pg_server: PgServer, pg_engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _calls(1)
    log = fill_log(tmp_path / "log", [c.body for c in calls])
    runner = ConsumerThread(log, pg_engine, pause=0.1)  # slow until the outage: mid-run
    down = False
    runner.start()
    try:
        wait_until(lambda: len(runner.batch_times) >= 3, 30, "three committed batches")
        pg_server.stop("immediate")
        down = True
        at_stop = log.checkpoint_of()
        time.sleep(2.5)
        during = log.checkpoint_of()
        pg_server.start()
        down = False
        runner.pause = 0.0
        stats = runner.finish()
    finally:
        runner.stop.set()
        if down:  # other tests share the server: never leave it stopped
            pg_server.start()
    # the outage hit the middle of the run, and held the checkpoint while it lasted
    assert 0 <= at_stop < N - 1
    assert during - at_stop <= BATCH  # at most the batch committed just before the stop
    assert stats.retries > 0  # failed attempts, each retried after the backoff
    # everything stored once, with the right tokens; the checkpoint is the last event
    assert db_totals(pg_engine) == expected_totals(calls)
    assert log.checkpoint_of() == log.last_sequence_number() == N - 1
    assert (stats.batches, stats.events) == (N // BATCH, N)
    # a commit whose acknowledgement was lost in the crash is redelivered: a duplicate
    assert stats.result.stored + stats.result.duplicates == N
    assert stats.result.stored == N - stats.result.duplicates
    assert stats.result.dead_lettered == 0 and dead_letters(pg_engine) == []
    with capsys.disabled():
        print(
            f"\n[db down] pg stopped at checkpoint {at_stop} for 2.5 s: "
            f"{stats.retries} retries, {stats.result.stored} stored, "
            f"{stats.result.duplicates} duplicates, {N} rows"
        )


def _short_busy_timeout(engine: Engine, ms: int) -> None:
    """New connections of ``engine`` give up on a locked database after ``ms`` milliseconds."""

    def pragma(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={ms}")
        cursor.close()

    event.listen(engine, "connect", pragma)  # after engine_from_url's own (30 s)
    engine.dispose()  # drop pooled connections made with the default


@pytest.mark.parametrize("busy", ["waits", "fails_and_retries"])
def test_sqlite_locked_by_another_writer(
    busy: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert engine.dialect.name == "sqlite"
    if busy == "fails_and_retries":
        _short_busy_timeout(engine, 100)
    calls = _calls(2)
    log = fill_log(tmp_path / "log", [c.body for c in calls])
    runner = ConsumerThread(log, engine, pause=0.05)  # slow until the lock: mid-run
    path = engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None, timeout=10)
    runner.start()
    held = 0.0
    try:
        wait_until(lambda: len(runner.batch_times) >= 3, 30, "three committed batches")
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another ingester would hold it
        other.execute(
            "INSERT INTO BusinessUnitMap (SubscriptionId, BusinessUnit) VALUES ('x', 'Other')"
        )
        locked_at, at_lock = time.monotonic(), log.checkpoint_of()
        time.sleep(2.0)
        during = log.checkpoint_of()
        other.execute("COMMIT")
        held = time.monotonic() - locked_at
        runner.pause = 0.0
        stats = runner.finish()
    finally:
        runner.stop.set()
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert at_lock < N - 1 and during - at_lock <= BATCH  # held up while the lock was held
    gaps = [b - a for a, b in zip(runner.batch_times, runner.batch_times[1:], strict=False)]
    assert max(gaps) >= 0.75 * held  # one batch could not commit while the lock was held
    if busy == "waits":
        assert stats.retries == 0  # busy_timeout (30 s) outlasted the lock
    else:
        assert stats.retries > 0  # "database is locked" after 100 ms: retried with backoff
    assert db_totals(engine) == expected_totals(calls)
    assert (stats.result.stored, stats.result.duplicates) == (N, 0)  # a failed write left nothing
    assert log.checkpoint_of() == N - 1
    assert dead_letters(engine) == []
    with capsys.disabled():
        print(
            f"\n[sqlite locked, {busy}] lock held {held:.1f} s: {stats.retries} retries, "
            f"longest gap between batches {max(gaps):.1f} s, {N} rows"
        )
