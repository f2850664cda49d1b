"""The local event log: durable append, incremental receive, checkpoints, torn tails, locking."""

from __future__ import annotations

import json
import multiprocessing
import os
import struct
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aoai_helpers import clock
from aoai_helpers.eventlog.eventhub import (
    MAX_EVENT_BYTES,
    DamagedRegion,
    EventConsumer,
    EventData,
    EventProducer,
    LocalEventLog,
    read_damaged,
)
from aoai_helpers.exceptions import ConfigError, InputError

HEADER = 28  # magic, sequence number, enqueued ms, length, crc32


def _send(log: LocalEventLog, *bodies: bytes) -> None:
    with log.producer() as producer:
        producer.send(list(bodies))


def _receive_all(log: LocalEventLog, group: str = "$Default") -> list[EventData]:
    with log.consumer(group) as consumer:
        return consumer.receive(10_000, 0)


def _record(seq: int, body: bytes, *, crc: int | None = None) -> bytes:
    fields = struct.pack("<QqI", seq, 1_700_000_000_000, len(body))
    good = zlib.crc32(body, zlib.crc32(fields))
    return b"EVT1" + fields + (good if crc is None else crc).to_bytes(4, "little") + body


def test_send_receive_checkpoint(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path / "log", fsync=False)
    assert (log.last_sequence_number(), log.checkpoint_of(), log.lag()) == (-1, -1, 0)
    _send(log, b"a", b"bb", b"ccc")
    with log.consumer() as consumer:
        first = consumer.receive(2, 1.0)
        rest = consumer.receive(10, 1.0)
        assert [e.body for e in first + rest] == [b"a", b"bb", b"ccc"]
        assert [e.sequence_number for e in first + rest] == [0, 1, 2]
        assert all(e.partition_id == "0" and e.enqueued_time.tzinfo is UTC for e in first + rest)
        assert abs(clock.now() - first[0].enqueued_time).total_seconds() < 60  # the business clock
        started = time.monotonic()
        assert consumer.receive(10, 0.1) == []
        assert time.monotonic() - started >= 0.1
        consumer.checkpoint(rest[-1])
    assert (log.last_sequence_number(), log.checkpoint_of(), log.lag()) == (2, 2, 0)
    saved = json.loads((tmp_path / "log/checkpoints/$Default.json").read_text())
    assert saved["sequence_number"] == 2
    assert saved["next_offset"] == (tmp_path / "log/events.log").stat().st_size
    assert [p.name for p in (tmp_path / "log/checkpoints").iterdir()] == ["$Default.json"]


def test_both_implement_the_protocols(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    with log.producer() as producer, log.consumer() as consumer:
        assert isinstance(producer, EventProducer)
        assert isinstance(consumer, EventConsumer)


def test_receive_returns_as_soon_as_an_event_arrives(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    timer = threading.Timer(0.1, _send, (log, b"late"))
    with log.consumer() as consumer:
        started = time.monotonic()
        timer.start()
        events = consumer.receive(10, 5.0)
        elapsed = time.monotonic() - started
    timer.join()
    assert [e.body for e in events] == [b"late"]
    assert 0.09 <= elapsed < 2.0


def test_consumer_reads_incrementally(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    with log.producer() as producer, log.consumer() as consumer:
        for i in range(5):
            producer.send([f"e{i}".encode()])
            [event] = consumer.receive(10, 1.0)
            assert (event.sequence_number, event.body) == (i, f"e{i}".encode())
        assert consumer.receive(10, 0) == []


def test_restart_resumes_after_the_checkpoint_and_redelivers_the_rest(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path)
    _send(log, *(f"e{i}".encode() for i in range(5)))
    with log.consumer() as consumer:
        events = consumer.receive(10, 1.0)
        assert len(events) == 5
        consumer.checkpoint(events[2])  # 3 and 4 were received, never checkpointed

    again = LocalEventLog(tmp_path)  # a restart: new objects on the same directory
    assert (again.last_sequence_number(), again.checkpoint_of(), again.lag()) == (4, 2, 2)
    with again.consumer() as consumer:
        assert [e.sequence_number for e in consumer.receive(10, 1.0)] == [3, 4]
    _send(again, b"after restart")
    assert [(e.sequence_number, e.body) for e in _receive_all(again)][-1] == (5, b"after restart")


def test_a_checkpoint_that_does_not_match_the_log_is_found_by_sequence_number(
    tmp_path: Path,
) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    _send(log, b"a", b"b", b"c", b"d")
    (tmp_path / "checkpoints/$Default.json").write_text(
        json.dumps({"sequence_number": 1, "next_offset": 9})
    )
    assert [e.body for e in _receive_all(log)] == [b"c", b"d"]


@pytest.mark.parametrize(
    "torn",
    [
        pytest.param(lambda: _record(3, b"x" * 100)[:60], id="short-body"),
        pytest.param(lambda: _record(3, b"x" * 100)[:10], id="short-header"),
        pytest.param(lambda: _record(3, b"x" * 100, crc=12345), id="bad-crc"),
        pytest.param(lambda: b"\0" * 300, id="zeros"),
    ],
)
def test_a_torn_tail_is_skipped_then_truncated_by_the_next_producer(
    tmp_path: Path, torn: object, caplog: pytest.LogCaptureFixture
) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    _send(log, b"a", b"b", b"c")
    path = tmp_path / "events.log"
    committed = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(torn())  # type: ignore[operator]
    with log.consumer() as consumer:
        assert [e.body for e in consumer.receive(10, 0.05)] == [b"a", b"b", b"c"]
        assert consumer.receive(10, 0.05) == []
        assert log.last_sequence_number() == 2
        _send(LocalEventLog(tmp_path, fsync=False), b"d")  # truncates, then appends
        assert [(e.sequence_number, e.body) for e in consumer.receive(10, 1.0)] == [(3, b"d")]
    assert path.stat().st_size == committed + HEADER + 1
    assert "torn tail" in caplog.text
    assert [e.body for e in _receive_all(log)] == [b"a", b"b", b"c", b"d"]


def test_damage_followed_by_valid_records_is_skipped_set_aside_not_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    _send(log, b"first", b"second", b"third")
    path = tmp_path / "events.log"
    data = bytearray(path.read_bytes())
    second = 8 + HEADER + 5
    data[second + HEADER] ^= 0xFF  # the body of "second"
    path.write_bytes(bytes(data))
    assert [(e.sequence_number, e.body) for e in _receive_all(log)] == [
        (0, b"first"),
        (2, b"third"),
    ]
    assert "skipped 34 damaged bytes at byte 41 (after sequence number 0" in caplog.text
    [(region, kept)] = read_damaged(tmp_path)
    assert region == DamagedRegion(second, HEADER + 6, 0, 2) and region.lost == 1
    assert kept == bytes(data[second : second + HEADER + 6])
    _send(log, b"fourth")  # the producer finds the end past the damage: nothing truncated
    assert path.read_bytes()[: len(data)] == bytes(data)
    assert [(e.sequence_number, e.body) for e in _receive_all(log)][-1] == (3, b"fourth")
    assert log.last_sequence_number() == 3 and log.damaged() == [region]  # set aside once


def _produce(directory: str, tag: str, count: int) -> None:
    """Worker process: ``count`` events in sends of 1, 2 or 3 bodies."""
    log = LocalEventLog(directory, fsync=False)
    with log.producer() as producer:
        i = 0
        while i < count:
            size = min(1 + i % 3, count - i)
            producer.send([f"{tag}:{j}".encode() for j in range(i, i + size)])
            i += size


def test_concurrent_producers_in_three_processes(tmp_path: Path) -> None:
    LocalEventLog(tmp_path)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_produce, args=(str(tmp_path), f"p{n}", 300)) for n in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]

    log = LocalEventLog(tmp_path)
    events = _receive_all(log)
    assert [e.sequence_number for e in events] == list(range(900))
    bodies = [e.body.decode() for e in events]
    assert len(set(bodies)) == 900
    for n in range(3):  # each producer's events in the order it sent them
        mine = [int(b.split(":")[1]) for b in bodies if b.startswith(f"p{n}:")]
        assert mine == list(range(300))
    last = events[-1]
    assert int(last.offset) + HEADER + len(last.body) == (tmp_path / "events.log").stat().st_size
    assert log.last_sequence_number() == 899


def test_a_body_over_one_mib_is_rejected(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    with pytest.raises(InputError, match="exceeds the 1 MiB limit"):
        _send(log, b"ok", b"x" * (MAX_EVENT_BYTES + 1))
    assert log.last_sequence_number() == -1  # nothing of that send was written
    _send(log, b"x" * MAX_EVENT_BYTES)
    [event] = _receive_all(log)
    assert len(event.body) == MAX_EVENT_BYTES


def test_lag(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    _send(log, *(b"e" for _ in range(10)))
    assert log.lag() == 10
    with log.consumer() as consumer:
        consumer.checkpoint(consumer.receive(4, 1.0)[-1])
    assert log.lag() == 6
    assert log.lag("other") == 10


def test_consumer_groups_are_independent(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    _send(log, *(f"e{i}".encode() for i in range(6)))
    for group, upto in (("a", 4), ("b", 1)):
        with log.consumer(group) as consumer:
            consumer.checkpoint(consumer.receive(10, 1.0)[upto])
    again = LocalEventLog(tmp_path, fsync=False)
    assert (again.checkpoint_of("a"), again.checkpoint_of("b"), again.checkpoint_of()) == (4, 1, -1)
    assert [e.sequence_number for e in _receive_all(again, "a")] == [5]
    assert [e.sequence_number for e in _receive_all(again, "b")] == [2, 3, 4, 5]
    assert len(_receive_all(again)) == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["a.json", "b.json"]


@pytest.mark.parametrize(("fsync", "expected"), [(True, 1), (False, 0)])
def test_one_fsync_per_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool, expected: int
) -> None:
    log = LocalEventLog(tmp_path, fsync=fsync)
    with log.producer() as producer:
        producer.send([b"before"])
        calls: list[int] = []
        real = os.fsync

        def counting(fd: int) -> None:
            calls.append(fd)
            real(fd)

        monkeypatch.setattr(os, "fsync", counting)
        producer.send([b"a"] * 50)
    assert len(calls) == expected


def test_checkpoint_of_another_log_is_refused(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    foreign = EventData(b"x", 0, datetime.now(UTC), "1", "8")
    with log.consumer() as consumer, pytest.raises(ValueError, match="not received from"):
        consumer.checkpoint(foreign)


def test_a_directory_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="as an event log directory"):
        LocalEventLog(tmp_path / "file")


def test_a_foreign_file_is_not_taken_for_a_log(tmp_path: Path) -> None:
    (tmp_path / "events.log").write_bytes(b"something else entirely")
    with pytest.raises(InputError, match="not an event log"):
        LocalEventLog(tmp_path)


def test_bad_group_name_and_bad_checkpoint_file(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    with pytest.raises(ConfigError, match="invalid consumer group"):
        log.consumer("../escape")
    (tmp_path / "checkpoints/broken.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        log.checkpoint_of("broken")


def test_closed_producer_and_consumer_refuse_work(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False)
    producer, consumer = log.producer(), log.consumer()
    producer.close()
    consumer.close()
    producer.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        producer.send([b"x"])
    with pytest.raises(InputError, match="closed"):
        consumer.receive(1, 0)
