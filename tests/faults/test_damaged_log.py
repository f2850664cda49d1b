"""A damaged local event log: one flipped byte must cost one event, never the rest of the log.

Real bytes throughout: N records written by the real producer, one byte of record k flipped
on disk (in its body, and separately in each field of its header), then read by the real
consumer. Every other record must be delivered exactly once, in order, with its own sequence
number; the damaged bytes must be in ``damaged/events.log.damaged`` with their offset and the
sequence numbers around them; the log itself must be left as it was; checkpoints and restarts
across the damage must neither skip nor repeat a valid record; only a torn *tail* is still
truncated by the next producer. Then the same through ``consume()`` into the database, and
through ``python -m aoai_helpers consume --local``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from conftest import new_v2
from sqlalchemy.engine import Engine

from aoai_helpers.eventlog.eventhub import (
    HEADER_SIZE,
    DamagedRegion,
    EventData,
    LocalEventLog,
    read_damaged,
)
from aoai_helpers.pipeline.consume import drain
from aoai_helpers.pipeline.ingest import Ingestor

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "examples" / "gateway.yaml")
N = 12
FILE_HEADER = 8


def _bodies(n: int = N) -> list[bytes]:
    """``n`` distinct v2 calls as the gateway logs them (JSON, no ``EVT1`` inside)."""
    return [json.dumps(new_v2(), separators=(",", ":")).encode() for _ in range(n)]


def _write(
    directory: Path, bodies: list[bytes], *, sends: int = 1
) -> tuple[LocalEventLog, list[int]]:
    """The log with ``bodies`` (in ``sends`` appends) and the offset of each record."""
    log = LocalEventLog(directory, fsync=False)
    per = -(-len(bodies) // sends)
    with log.producer() as producer:
        for i in range(0, len(bodies), per):
            producer.send(bodies[i : i + per])
    offsets, at = [], FILE_HEADER
    for body in bodies:
        offsets.append(at)
        at += HEADER_SIZE + len(body)
    assert log.path.stat().st_size == at
    return log, offsets


def _flip(path: Path, at: int, mask: int = 0xFF) -> bytes:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)


def _read_all(log: LocalEventLog, group: str = "$Default", batch: int = 1000) -> list[EventData]:
    out: list[EventData] = []
    with log.consumer(group) as consumer:
        while events := consumer.receive(batch, 0):
            out += events
    return out


# Where in record k a byte is flipped (offset inside the record, xor mask): every header field
# (magic, sequence number, enqueued time, length — shorter, longer inside the file, past the
# end of the file, over the 1 MiB limit — and the CRC) and the body.
FLIPS: dict[str, tuple[int, int]] = {
    "body": (HEADER_SIZE + 10, 0x01),
    "body-last-byte": (-1, 0x20),
    "magic": (0, 0x01),
    "sequence": (4, 0x01),
    "sequence-high-byte": (11, 0x80),
    "enqueued-time": (14, 0x10),
    "length-shorter": (20, 0x01),
    "length-longer-inside-the-file": (21, 0x01),  # +256 bytes: into the next records
    "length-past-the-end": (22, 0x0F),  # +~1 MB: beyond the end of the file
    "length-over-the-limit": (23, 0x01),  # > 1 MiB: impossible
    "crc": (24, 0x04),
}


@pytest.mark.parametrize("where", sorted(FLIPS))
@pytest.mark.parametrize("k", [0, 5, N - 2])
def test_one_flipped_byte_costs_one_record_and_every_other_is_delivered_once(
    tmp_path: Path, where: str, k: int, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    inside, mask = FLIPS[where]
    size_k = HEADER_SIZE + len(bodies[k])
    damaged = _flip(log.path, offsets[k] + (inside % size_k), mask)

    events = _read_all(log)
    expected = [(i, bodies[i]) for i in range(N) if i != k]
    assert [(e.sequence_number, e.body) for e in events] == expected
    assert [e.offset for e in events] == [str(offsets[i]) for i in range(N) if i != k]

    [(region, kept)] = read_damaged(tmp_path)
    assert region == DamagedRegion(offsets[k], size_k, k - 1, k + 1)
    assert kept == damaged[offsets[k] : offsets[k] + size_k]  # exactly record k's bytes
    assert log.path.read_bytes() == damaged  # the log itself is never changed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"damaged bytes at byte {offsets[k]}" in warnings[0].message


def test_two_damaged_regions_and_adjacent_damage(tmp_path: Path) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies, sends=4)
    _flip(log.path, offsets[2] + HEADER_SIZE + 3)
    _flip(log.path, offsets[7] + 1)  # records 7 and 8: one region
    _flip(log.path, offsets[8] + HEADER_SIZE + 3)
    with log.consumer() as consumer:
        events = []
        while batch := consumer.receive(2, 0):  # small batches: damage between two receives
            events += batch
        assert [r.offset for r in consumer.skipped] == [offsets[2], offsets[7]]
    assert [e.sequence_number for e in events] == [0, 1, 3, 4, 5, 6, 9, 10, 11]
    assert [(r.after_sequence, r.next_sequence, r.lost) for r in log.damaged()] == [
        (1, 3, 1),
        (6, 9, 2),
    ]
    assert log.damaged()[1].length == offsets[9] - offsets[7]


def test_checkpoints_and_restarts_across_the_damage_never_skip_or_repeat(tmp_path: Path) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    _flip(log.path, offsets[4] + HEADER_SIZE + 1)
    delivered: list[int] = []
    for batch_size in (2, 2, 1, 3, 100):  # a new consumer (a restart) for every batch
        with log.consumer() as consumer:
            events = consumer.receive(batch_size, 0)
            delivered += [e.sequence_number for e in events]
            if events:
                consumer.checkpoint(events[-1])
    assert delivered == [i for i in range(N) if i != 4]
    assert log.checkpoint_of() == N - 1 and log.lag() == 0
    with log.consumer() as consumer:
        assert consumer.receive(10, 0) == []
    assert len(log.damaged()) == 1  # found by several restarts, set aside once


def test_a_checkpoint_just_before_the_damage_resumes_without_a_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    with log.consumer() as consumer:
        events = consumer.receive(3, 0)
        consumer.checkpoint(events[-1])  # next_offset = record 3, about to be damaged
    _flip(log.path, offsets[3] + 2)
    caplog.clear()
    assert [e.sequence_number for e in _read_all(log)] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert "does not match" not in caplog.text


def test_damage_after_the_checkpoint_in_records_already_delivered(tmp_path: Path) -> None:
    """Bit rot in records already checkpointed: a restart neither repeats nor loses any."""
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    with log.consumer() as consumer:
        events = consumer.receive(6, 0)
        consumer.checkpoint(events[-1])  # 0..5 done
    _flip(log.path, offsets[2] + HEADER_SIZE)  # damage before the checkpoint
    assert [e.sequence_number for e in _read_all(log)] == [6, 7, 8, 9, 10, 11]
    # the checkpointed record itself damaged, its offset still right: resumes after it
    _flip(log.path, offsets[5] + HEADER_SIZE)
    assert [e.sequence_number for e in _read_all(log)] == [6, 7, 8, 9, 10, 11]


def test_a_checkpoint_whose_record_is_lost_in_damage_resumes_after_it(tmp_path: Path) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    with log.consumer() as consumer:
        consumer.checkpoint(consumer.receive(6, 0)[-1])  # 0..5 done
    checkpoint = tmp_path / "checkpoints" / "$Default.json"
    saved = json.loads(checkpoint.read_text())
    checkpoint.write_text(json.dumps({**saved, "next_offset": saved["next_offset"] + 1}))  # off
    _flip(log.path, offsets[5] + 1)  # record 5 (the checkpointed one) is damage now
    _flip(log.path, offsets[6] + 1)  # and record 6, never delivered: one region, 5 and 6
    assert [e.sequence_number for e in _read_all(log)] == [7, 8, 9, 10, 11]
    [region] = log.damaged()
    assert (region.offset, region.after_sequence, region.next_sequence) == (offsets[5], 4, 7)


def test_producers_number_on_after_the_damage(tmp_path: Path) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    _flip(log.path, offsets[6] + HEADER_SIZE + 5)
    assert log.last_sequence_number() == N - 1
    fresh = LocalEventLog(tmp_path, fsync=False)  # a new process: scans the whole log
    with fresh.producer() as producer:
        producer.send([b"after"])
    assert fresh.last_sequence_number() == N
    events = _read_all(fresh)
    assert [e.sequence_number for e in events][-2:] == [N - 1, N] and events[-1].body == b"after"
    assert len(events) == N  # N + 1 records, one of them damaged


def test_only_a_torn_tail_is_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged *last* record has no valid record after it: a torn tail, as before."""
    bodies = _bodies(4)
    log, offsets = _write(tmp_path, bodies)
    _flip(log.path, offsets[3] + HEADER_SIZE + 1)
    assert [e.sequence_number for e in _read_all(log)] == [0, 1, 2]
    assert log.damaged() == []  # nothing skipped: the reader waits before it
    with LocalEventLog(tmp_path, fsync=False).producer() as producer:
        producer.send([b"next"])  # truncates the torn tail, then appends
    assert "torn tail" in caplog.text
    assert log.path.stat().st_size == offsets[3] + HEADER_SIZE + 4
    assert [(e.sequence_number, e.body) for e in _read_all(log, "other")][-1] == (3, b"next")


def test_an_append_in_progress_is_not_damage(tmp_path: Path) -> None:
    """A record whose bytes are not all there yet is waited for, not skipped."""
    bodies = _bodies(3)
    log, _ = _write(tmp_path, bodies[:2])
    fields = struct.pack("<QqI", 2, 1_700_000_000_000, len(bodies[2]))
    crc = zlib.crc32(bodies[2], zlib.crc32(fields)).to_bytes(4, "little")
    record = b"EVT1" + fields + crc + bodies[2]
    with log.consumer() as consumer:
        assert len(consumer.receive(10, 0)) == 2
        with log.path.open("ab") as fh:
            fh.write(record[:100])  # the first part of the write
        assert consumer.receive(10, 0) == []
        with log.path.open("ab") as fh:
            fh.write(record[100:])
        [event] = consumer.receive(10, 0)
        assert (event.sequence_number, event.body) == (2, bodies[2])
        assert consumer.skipped == []
    assert not log.damaged_path.exists()


def test_every_consumer_group_skips_the_region_which_is_set_aside_once(tmp_path: Path) -> None:
    bodies = _bodies()
    log, offsets = _write(tmp_path, bodies)
    _flip(log.path, offsets[1] + HEADER_SIZE)
    for group in ("$Default", "reporting", "audit"):
        assert len(_read_all(log, group)) == N - 1
    assert len(read_damaged(tmp_path)) == 1


def test_the_log_and_what_is_set_aside_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    bodies = _bodies(3)
    log, offsets = _write(directory, bodies)
    _flip(log.path, offsets[1] + HEADER_SIZE)
    with log.consumer() as consumer:
        consumer.checkpoint(consumer.receive(10, 0)[-1])
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(log.path) == 0o600
    assert mode(log.damaged_path) == 0o600
    assert mode(directory / "checkpoints" / "$Default.json") == 0o600
    for sub in (directory, directory / "checkpoints", directory / "damaged"):
        assert mode(sub) == 0o700, sub
    # files and directories left world-readable by an earlier version: tightened on open
    for p in (log.path, directory / "checkpoints" / "$Default.json"):
        os.chmod(p, 0o644)
    os.chmod(directory, 0o755)
    os.chmod(directory / "checkpoints", 0o755)
    again = LocalEventLog(directory, fsync=False)
    with again.consumer():
        pass
    assert mode(log.path) == 0o600 and mode(directory / "checkpoints" / "$Default.json") == 0o600
    assert mode(directory) == 0o700 and mode(directory / "checkpoints") == 0o700


def test_consume_stores_every_other_event_exactly_once(
    tmp_path: Path, engine: Engine, token_rows: Callable[[Engine], list[dict[str, Any]]]
) -> None:
    bodies = _bodies(40)
    log, offsets = _write(tmp_path / "log", bodies, sends=5)
    _flip(log.path, offsets[17] + HEADER_SIZE + 7)
    with log.consumer() as consumer:
        stats = drain(consumer, Ingestor(engine), batch_size=7)
    assert (stats.events, stats.result.stored, stats.result.duplicates) == (39, 39, 0)
    stored = sorted(r["RequestId"] for r in token_rows(engine))
    assert stored == sorted(json.loads(b)["RequestId"] for i, b in enumerate(bodies) if i != 17)
    assert log.checkpoint_of() == 39 and log.lag() == 0
    with log.consumer() as consumer:  # again: nothing redelivered
        assert drain(consumer, Ingestor(engine)).events == 0


def test_the_consume_command_warns_once_and_goes_on(tmp_path: Path) -> None:
    state = tmp_path / "state"
    bodies = _bodies(30)
    log, offsets = _write(state / "events", bodies)
    _flip(log.path, offsets[10] + HEADER_SIZE + 2)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    args = ("consume", "--local", "--until-idle", "--spec", SPEC, "--state-dir", str(state))
    out = run_cli(*args, "--db", db, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "29 received: 29 stored" in out.stdout
    warnings = [line for line in out.stderr.splitlines() if "damaged bytes" in line]
    assert len(warnings) == 1 and f"at byte {offsets[10]}" in warnings[0]
    assert "1 damaged region(s) of the event log skipped" in out.stdout
    again = run_cli(*args, "--db", db, cwd=tmp_path, timeout=180)
    assert "stopped: 0 batches" in again.stdout and "damaged" not in again.stderr
