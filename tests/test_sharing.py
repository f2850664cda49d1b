"""A partitioned local event log shared by several consumers of one group (eventlog/sharing.py).

Partitions are claimed with ``flock``: a partition is read by one consumer at a time, changes
hands only after every event its owner returned is checkpointed, and a dead consumer's
partitions are free at once. Two consumers (threads, or ``consume --local`` processes) drain a
partitioned log into one database: each event stored once, every partition checkpointed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_run import ROOT, clean_env, run_cli
from conftest import new_v2
from sqlalchemy import func, select

from aoai_helpers.db.engine import engine_from_url
from aoai_helpers.db.tables import token_table
from aoai_helpers.eventlog.eventhub import (
    EventData,
    LocalEventLog,
    LocalGroupConsumer,
    SpreadingProducer,
)
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.pipeline.consume import consume
from aoai_helpers.pipeline.ingest import Ingestor
from aoai_helpers.pipeline.service import ensure_db

SPEC = str(ROOT / "examples" / "gateway.yaml")


def _fill(log: LocalEventLog, sends: int, per_send: int = 1) -> list[bytes]:
    bodies = [json.dumps(new_v2()).encode() for _ in range(sends * per_send)]
    with log.producer() as producer:
        for i in range(sends):
            producer.send(bodies[i * per_send : (i + 1) * per_send])
    return bodies


def _drain(consumer: LocalGroupConsumer, max_wait: float = 0.0) -> list[EventData]:
    """Receive and checkpoint until idle; the events, in the order received."""
    got: list[EventData] = []
    while events := consumer.receive(100, max_wait):
        consumer.checkpoint(events[-1])
        got.extend(events)
    return got


def _rows(url: str) -> tuple[int, int]:
    """(rows, distinct RequestIds) in the token table."""
    engine = engine_from_url(url)
    try:
        with engine.connect() as conn:
            query = select(func.count(), func.count(token_table.c.RequestId.distinct()))
            rows, distinct = conn.execute(query).one()
            return int(rows), int(distinct)
    finally:
        engine.dispose()


def _lagging(log: LocalEventLog) -> dict[str, int]:
    return {
        p: log.last_sequence_number(p) - log.checkpoint_of(partition=p) for p in log.partition_ids()
    }


def test_partitions_are_made_found_again_and_only_added(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=4)
    assert log.partition_ids() == ["0", "1", "2", "3"]
    assert (tmp_path / "events.log").is_file()  # partition 0: the one-partition layout
    assert all((tmp_path / "partitions" / k / "events.log").is_file() for k in "123")
    assert LocalEventLog(tmp_path, fsync=False).partitions == 4
    with pytest.raises(ConfigError, match="added, not removed"):
        LocalEventLog(tmp_path, fsync=False, partitions=2)
    assert LocalEventLog(tmp_path, fsync=False, partitions=5).partition_ids()[-1] == "4"
    assert log.partition_ids() == ["0", "1", "2", "3", "4"]  # seen by an open log too
    assert LocalEventLog(tmp_path / "one", fsync=False).partition_ids() == ["0"]


def test_the_producer_spreads_sends_round_robin(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=4)
    assert isinstance(log.producer(), SpreadingProducer)
    _fill(log, sends=8, per_send=3)  # a send stays in one partition, in order
    assert [log.last_sequence_number(p) for p in log.partition_ids()] == [5, 5, 5, 5]
    assert log.lag() == 24


def test_one_consumer_reads_every_partition_and_checkpoints_each(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=3)
    bodies = _fill(log, sends=9, per_send=2)
    with log.consumer() as consumer:
        got = _drain(consumer)
        assert consumer.owned == ["0", "1", "2"]
    assert sorted(e.body for e in got) == sorted(bodies)
    assert Counter(e.partition_id for e in got) == {"0": 6, "1": 6, "2": 6}
    assert log.lag() == 0 and set(_lagging(log).values()) == {0}
    with log.consumer() as consumer:  # a restart finds nothing
        assert consumer.receive(10, 0) == []
    assert sorted(p.name for p in (tmp_path / "consumers" / "$Default" / "members").iterdir()) == []


def test_a_partition_changes_hands_only_after_its_checkpoint(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=4)
    _fill(log, sends=8, per_send=5)  # 10 events in each partition
    seen: list[EventData] = []
    a = log.consumer(balance_interval=0)
    try:
        done = a.receive(5, 0)  # a alone owns all four
        assert (a.owned, done[0].partition_id) == (["0", "1", "2", "3"], "0")
        a.checkpoint(done[-1])
        held = a.receive(5, 0)  # partition 1: in hand, not checkpointed
        assert held[0].partition_id == "1"
        b = log.consumer(balance_interval=0)  # b joins: due partitions 1 and 3
        try:
            other = a.receive(5, 0)  # a releases 3, keeps 1 until its batch is checkpointed
            assert a.owned == ["0", "1", "2"]
            a.checkpoint(other[-1])
            from_b = b.receive(5, 0)
            assert (b.owned, from_b[0].partition_id) == (["3"], "3")
            with pytest.raises(ValueError, match="does not own"):
                b.checkpoint(held[-1])
            a.checkpoint(held[-1])
            b.checkpoint(from_b[-1])
            seen += done + held + other + from_b + a.receive(5, 0)  # now a lets 1 go
            a.checkpoint(seen[-1])
            assert a.owned == ["0", "2"]
            seen += _drain(b)
            assert b.owned == ["1", "3"]
        finally:
            b.close()
        seen += _drain(a)  # b gone: a takes everything again
        assert a.owned == ["0", "1", "2", "3"]
    finally:
        a.close()
    assert log.lag() == 0
    assert sorted((e.partition_id, e.sequence_number) for e in seen) == sorted(
        (p, n) for p in "0123" for n in range(10)
    )  # every event once: nothing redelivered, nothing skipped


def test_an_idle_receive_waits_for_a_partition_being_handed_over(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=2)
    _fill(log, sends=2, per_send=10)
    a = log.consumer(balance_interval=0)
    a.receive(10, 0)  # a owns both, one batch not checkpointed
    b = log.consumer(balance_interval=0)
    released = threading.Event()

    def finish_a() -> None:
        time.sleep(0.3)
        a.close()  # hands everything back (the batch will be redelivered)
        released.set()

    thread = threading.Thread(target=finish_a)
    thread.start()
    try:
        started = time.monotonic()
        got = _drain(b, max_wait=0)  # max_wait 0, but its partition is being handed over
        assert released.is_set() and time.monotonic() - started >= 0.25
        assert len(got) == 20 and b.owned == ["0", "1"]
    finally:
        thread.join()
        b.close()


def test_a_dead_consumers_partitions_are_free_at_once(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=2)
    _fill(log, sends=4, per_send=3)
    script = (
        "import sys, time\n"
        "from aoai_helpers.eventlog.eventhub import LocalEventLog\n"
        "c = LocalEventLog(sys.argv[1], fsync=False).consumer()\n"
        "c.receive(3, 0)\n"
        "print(','.join(c.owned), flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0,1"
        with log.consumer(handover_timeout=0) as blocked:
            assert blocked.receive(3, 0) == [] and blocked.owned == []  # held by the live one
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    members = tmp_path / "consumers" / "$Default" / "members"
    assert len(list(members.glob("*.member"))) == 1  # the dead one's file is still there
    with log.consumer() as consumer:
        assert len(_drain(consumer)) == 12  # nothing was checkpointed: all redelivered
        assert len(list(members.glob("*.member"))) == 1  # the dead one's is gone


def test_free_partitions_with_events_are_drained_before_idle(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=4)
    _fill(log, sends=4, per_send=2)
    with log.consumer() as a, log.consumer() as b:  # b never reads: a is due only half
        assert len(_drain(a)) == 8  # … but takes the free partitions that have events
        assert b.owned == []
    assert log.lag() == 0


def test_closed_consumer_and_bad_group(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path, fsync=False, partitions=2)
    with pytest.raises(ConfigError, match="invalid consumer group"):
        log.consumer("../x")
    consumer = log.consumer()
    consumer.close()
    consumer.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        consumer.receive(1, 0)


def test_two_consumers_store_each_event_once(tmp_path: Path) -> None:
    log = LocalEventLog(tmp_path / "log", fsync=False, partitions=4)
    _fill(log, sends=40, per_send=50)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = engine_from_url(url)
    ensure_db(engine)
    consumers = [log.consumer(balance_interval=0.05) for _ in range(2)]  # both members at once
    stats = []

    def run(consumer: LocalGroupConsumer) -> None:
        ingestor = Ingestor(engine)
        stats.append(consume(consumer, ingestor, batch_size=100, max_wait=0.2, idle_exit=True))

    threads = [threading.Thread(target=run, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for consumer in consumers:
        consumer.close()
    engine.dispose()
    assert len(stats) == 2 and all(s.result.stored > 0 for s in stats)  # both did work
    assert sum(s.result.stored for s in stats) == 2000
    assert sum(s.result.duplicates for s in stats) == 0  # no partition was read by both
    assert _rows(url) == (2000, 2000)
    assert log.lag() == 0


def test_two_consume_processes_share_a_partitioned_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = LocalEventLog(state / "events", fsync=False, partitions=4)
    _fill(log, sends=20, per_send=30)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    engine = engine_from_url(db)
    ensure_db(engine)  # the schema first: two processes do not race to create it
    engine.dispose()
    args = [
        "consume",
        "--local",
        "--until-idle",
        "--spec",
        SPEC,
        "--state-dir",
        str(state),
        "--db",
        db,
        "--batch-size",
        "30",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aoai_helpers", *args],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    assert _rows(db) == (600, 600)
    assert log.lag() == 0
    again = run_cli(*args, cwd=tmp_path)  # everything checkpointed
    assert "stopped: 0 batches" in again.stdout
