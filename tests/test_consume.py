"""The consumer loop: event log → one transaction per batch → checkpoint, at least once."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import dead_letter
from aoai_helpers.eventlog.eventhub import EventData, LocalConsumer, LocalEventLog
from aoai_helpers.exceptions import ConfigError, DatabaseError
from aoai_helpers.pipeline.consume import consume, drain, retry_until_open
from aoai_helpers.pipeline.ingest import BatchResult, Ingestor, RawEvent

Rows = Callable[[Engine], list[dict[str, Any]]]


def _body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


@pytest.fixture
def log(tmp_path: Path) -> LocalEventLog:
    return LocalEventLog(tmp_path / "eventlog", fsync=False)


def _fill(log: LocalEventLog, events: Sequence[dict[str, Any] | bytes]) -> None:
    with log.producer() as producer:
        producer.send([e if isinstance(e, bytes) else _body(e) for e in events])


class _CrashOnCheckpoint:
    """A consumer that dies between the commit and the checkpoint."""

    def __init__(self, inner: LocalConsumer) -> None:
        self.inner = inner

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        return self.inner.receive(max_events, max_wait)

    def checkpoint(self, event: EventData) -> None:
        raise RuntimeError("crashed before the checkpoint")

    def close(self) -> None:
        self.inner.close()


def test_events_end_up_in_the_database_exactly_once(
    log: LocalEventLog, engine: Engine, make_v2: Callable[..., dict[str, Any]], token_rows: Rows
) -> None:
    events = [make_v2() for _ in range(50)]
    _fill(log, events)
    seen: list[BatchResult] = []
    with log.consumer() as consumer:
        stats = consume(
            consumer,
            Ingestor(engine),
            batch_size=20,
            max_wait=0,
            idle_exit=True,
            on_batch=seen.append,
        )
    assert (stats.batches, stats.events, stats.retries) == (3, 50, 0)
    assert [r.received for r in seen] == [20, 20, 10]
    assert (stats.result.received, stats.result.stored, stats.result.duplicates) == (50, 50, 0)
    assert sorted(r["RequestId"] for r in token_rows(engine)) == sorted(
        e["RequestId"] for e in events
    )
    assert (log.checkpoint_of(), log.lag()) == (49, 0)
    with log.consumer() as consumer:  # a restart finds nothing left to do
        assert drain(consumer, Ingestor(engine)).events == 0
    assert len(token_rows(engine)) == 50


def test_a_crash_between_commit_and_checkpoint_redelivers_but_stores_nothing_twice(
    log: LocalEventLog, engine: Engine, make_v2: Callable[..., dict[str, Any]], token_rows: Rows
) -> None:
    _fill(log, [make_v2() for _ in range(10)])
    crashing = _CrashOnCheckpoint(log.consumer())
    try:
        with pytest.raises(RuntimeError, match="crashed"):
            consume(crashing, Ingestor(engine), max_wait=0, idle_exit=True)
    finally:
        crashing.close()
    assert (len(token_rows(engine)), log.checkpoint_of()) == (10, -1)  # committed, not checkpointed

    with log.consumer() as consumer:  # the restart
        stats = drain(consumer, Ingestor(engine))
    assert (stats.events, stats.result.stored, stats.result.duplicates) == (10, 0, 10)
    assert (len(token_rows(engine)), log.checkpoint_of()) == (10, 9)


def test_a_redelivered_batch_stores_only_the_calls_that_were_not_committed(
    log: LocalEventLog, engine: Engine, make_v2: Callable[..., dict[str, Any]], token_rows: Rows
) -> None:
    events = [make_v2() for _ in range(6)]
    _fill(log, events)
    with log.consumer() as consumer:  # received, half ingested by hand, never checkpointed
        received = consumer.receive(10, 1.0)
        Ingestor(engine).ingest_batch([RawEvent(e.body, "by hand") for e in received[:3]])
    with log.consumer() as consumer:
        stats = drain(consumer, Ingestor(engine))
    assert (stats.result.stored, stats.result.duplicates) == (3, 3)
    assert len(token_rows(engine)) == 6


def test_a_failing_database_holds_the_checkpoint_and_the_batch_is_retried(
    log: LocalEventLog,
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    token_rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = [make_v2() for _ in range(5)]
    _fill(log, events)
    ingestor = Ingestor(engine)
    real = ingestor.ingest_batch
    checkpoints_seen: list[int] = []

    def flaky(batch: Sequence[RawEvent]) -> BatchResult:
        checkpoints_seen.append(log.checkpoint_of())
        if len(checkpoints_seen) <= 2:
            raise DatabaseError("database unreachable or busy (sqlite:///x.db): disk I/O error")
        return real(batch)

    monkeypatch.setattr(ingestor, "ingest_batch", flaky)
    caplog.set_level(logging.WARNING, logger="aoai_helpers.pipeline.consume")
    with log.consumer() as consumer:
        stats = _drain_fast_retry(consumer, ingestor)
    assert checkpoints_seen == [-1, -1, -1]
    assert (stats.batches, stats.retries, stats.result.stored) == (1, 2, 5)
    assert (len(token_rows(engine)), log.checkpoint_of()) == (5, 4)
    failures = [r for r in caplog.records if r.name == "aoai_helpers.pipeline.consume"]
    assert len(failures) == 2
    assert all("\n" not in r.getMessage() and "disk I/O error" in r.getMessage() for r in failures)
    assert all(e["RequestId"] not in caplog.text for e in events)  # never event bodies


def _drain_fast_retry(consumer: LocalConsumer, ingestor: Ingestor) -> Any:
    return consume(
        consumer, ingestor, max_wait=0, idle_exit=True, retry_initial=0.01, retry_max=0.02
    )


def test_a_database_that_cannot_be_reached_loses_nothing(
    log: LocalEventLog,
    engine: Engine,
    tmp_path: Path,
    make_v2: Callable[..., dict[str, Any]],
    token_rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _fill(log, [make_v2() for _ in range(7)])
    unreachable = create_engine(f"sqlite:///{tmp_path}/no/such/folder/x.db")
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with log.consumer() as consumer:
            stats = consume(consumer, Ingestor(unreachable), stop=stop, retry_initial=0.02)
    finally:
        timer.join()
        unreachable.dispose()
    assert time.monotonic() - started < 5  # the backoff wait is interrupted by stop
    assert stats.retries >= 2 and stats.batches == 0
    assert "DatabaseError" in caplog.text and "will be redelivered" in caplog.text
    assert (log.checkpoint_of(), len(token_rows(engine))) == (-1, 0)
    with log.consumer() as consumer:  # the database is back
        assert drain(consumer, Ingestor(engine)).result.stored == 7
    assert log.checkpoint_of() == 6


def test_stop_commits_and_checkpoints_the_batch_in_flight(
    log: LocalEventLog,
    engine: Engine,
    make_v2: Callable[..., dict[str, Any]],
    token_rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fill(log, [make_v2() for _ in range(30)])
    ingestor = Ingestor(engine)
    real = ingestor.ingest_batch
    stop = threading.Event()

    def stop_midway(batch: Sequence[RawEvent]) -> BatchResult:
        stop.set()  # asked to stop while this batch is being stored
        return real(batch)

    monkeypatch.setattr(ingestor, "ingest_batch", stop_midway)
    with log.consumer() as consumer:
        stats = consume(consumer, ingestor, batch_size=10, stop=stop)
    assert (stats.batches, stats.events, stats.result.stored) == (1, 10, 10)
    assert (len(token_rows(engine)), log.checkpoint_of(), log.lag()) == (10, 9, 20)


def test_stop_ends_an_idle_loop(log: LocalEventLog, engine: Engine) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    started = time.monotonic()
    with log.consumer() as consumer:
        stats = consume(consumer, Ingestor(engine), max_wait=0.05, stop=stop)
    timer.join()
    assert stats.batches == 0
    assert time.monotonic() - started < 2


def test_bad_bodies_are_dead_lettered_with_their_place_in_the_log(
    log: LocalEventLog, engine: Engine, make_v2: Callable[..., dict[str, Any]]
) -> None:
    _fill(log, [make_v2(), b"not json at all", make_v2()])
    with log.consumer() as consumer:
        stats = drain(consumer, Ingestor(engine))
    assert (stats.result.stored, stats.result.dead_lettered) == (2, 1)
    with transaction(engine) as conn:
        assert conn.execute(select(dead_letter.c.Source)).scalars().all() == ["eventlog:0:1"]
    assert log.checkpoint_of() == 2


class _TwoPartitions:
    """An in-memory consumer over two partitions (the shape Event Hubs delivers)."""

    def __init__(self, bodies: list[bytes]) -> None:
        now = datetime.now(UTC)
        self.pending = [
            EventData(body, i // 2, now, str(i % 2), str(i)) for i, body in enumerate(bodies)
        ]
        self.checkpoints: list[tuple[str, int]] = []

    def receive(self, max_events: int, max_wait: float) -> list[EventData]:
        batch, self.pending = self.pending[:max_events], self.pending[max_events:]
        return batch

    def checkpoint(self, event: EventData) -> None:
        self.checkpoints.append((event.partition_id, event.sequence_number))

    def close(self) -> None:
        pass


def test_the_last_event_of_each_partition_is_checkpointed(
    engine: Engine, make_v2: Callable[..., dict[str, Any]], token_rows: Rows
) -> None:
    consumer = _TwoPartitions([_body(make_v2()) for _ in range(7)])
    stats = drain(consumer, Ingestor(engine), batch_size=4)
    assert stats.batches == 2
    assert consumer.checkpoints == [("0", 1), ("1", 1), ("0", 3), ("1", 2)]
    assert len(token_rows(engine)) == 7


def test_batch_size_must_be_positive(log: LocalEventLog, engine: Engine) -> None:
    with log.consumer() as consumer, pytest.raises(ValueError, match="batch_size"):
        consume(consumer, Ingestor(engine), batch_size=0)


# ----------------------------------------------------------------------------- the start


def test_a_database_down_at_the_start_is_retried_with_the_batch_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    stop = threading.Event()
    monkeypatch.setattr(stop, "wait", lambda delay: waits.append(delay) or False)
    attempts: list[int] = []
    lines: list[str] = []

    def open_db() -> str:
        attempts.append(1)
        if len(attempts) <= 7:
            raise DatabaseError(f"database unreachable (try {len(attempts)})\nsecond line")
        return "engine"

    got = retry_until_open(open_db, stop=stop, on_failure=lines.append, retry_max=8.0)
    assert got == "engine" and len(attempts) == 8
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # RETRY_INITIAL doubling to the max
    assert len(lines) == 7 and all("\n" not in line for line in lines)
    assert lines[0] == (
        "attempt 1 failed, retry in 0.5 s: DatabaseError: database unreachable (try 1)"
    )


def test_stop_ends_the_wait_for_the_database_at_once() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    lines: list[str] = []

    def down() -> None:
        raise DatabaseError("down")

    started = time.monotonic()
    timer.start()
    try:
        got = retry_until_open(down, stop=stop, on_failure=lines.append, retry_initial=30.0)
    finally:
        timer.join()
    assert got is None and len(lines) == 1
    assert time.monotonic() - started < 5  # not the 30 s of the backoff
    stop.set()  # already stopped: not even one attempt
    assert retry_until_open(down, stop=stop, on_failure=lines.append) is None
    assert len(lines) == 1


def test_a_configuration_error_at_the_start_is_not_retried() -> None:
    def bad_url() -> None:
        raise ConfigError("not a database URL")

    with pytest.raises(ConfigError, match="not a database URL"):
        retry_until_open(bad_url, stop=threading.Event(), on_failure=print)
