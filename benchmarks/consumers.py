"""Consumer scaling benchmark: events/s of 1 and 2 ``consume`` processes sharing one event log.

What it measures: ``--events`` v2 events with reported usage (as APIM logs them,
:mod:`aoai_helpers.synthetic.events`) are written, not timed, into a local event log with
``--partitions`` partitions (each ``send`` of ``--send`` events to the next partition, as Event
Hubs spreads events sent without a partition key). Then, for each database — a new SQLite file,
and a new database on a throwaway PostgreSQL server started as the tests start it
(``tests/pg.py``: ``initdb`` + ``pg_ctl``, ``fsync=off``) when its binaries are found — the log
is drained by **1** and then by **2** ``python -m aoai_helpers consume --local --until-idle``
processes started together, which share the partitions through the consumer group's partition
ownership (``aoai_helpers/eventlog/sharing.py``). Timed: from starting the processes to the
last one's exit (start-up, imports, reading, parsing, pricing, inserts, commits, a checkpoint
with fsync after every batch, the idle wait before exiting). Each run starts from the group's
checkpoints removed and an empty database whose schema was created beforehand (not timed).

PostgreSQL's databases get ``plan_cache_mode = force_custom_plan`` (``--pg-plans default``
leaves PostgreSQL's default). It mattered while ingest looked the batch's ids up before writing
(``RequestId IN (…)``): on a table never analysed, psycopg's prepared statement could settle on
a generic sequential-scan plan after five executions (seen: the same 1-consumer run in 14 s and
in 72 s). Ingest no longer looks ids up where the insert skips stored ones itself (SQLite,
PostgreSQL, SQL Server), so the setting is kept only to compare with earlier runs.
The write-ahead log written per event is measured there too (``pg_current_wal_lsn``): what the
rows, indexes and rollup cost in log bytes, for sizing a database's log rate.

Checked after each run: rows = distinct ``RequestId`` = ``--events``, every partition
checkpointed to its end. Printed per run: whole-process events/s, the same net of the fixed
cost (``consume --until-idle`` on an empty log, measured in the same run: start-up and the idle
wait), each process's share, and the 2/1 ratio. Best of ``--repeat`` runs, interleaved.

The 2-consumer figure is bounded by the machine's cores: two processes on a 2-core machine
(with the PostgreSQL server on the same cores) cannot go twice as fast whatever the ownership
does; SQLite additionally lets one writer commit at a time. Results go to
``bench-results/consumers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pg.py: the throwaway PostgreSQL server

from sqlalchemy import func, select  # noqa: E402

from aoai_helpers.db.engine import engine_from_url  # noqa: E402
from aoai_helpers.db.tables import token_table  # noqa: E402
from aoai_helpers.eventlog.eventhub import LocalEventLog  # noqa: E402
from aoai_helpers.eventlog.sharing import OWNERS_DIR  # noqa: E402
from aoai_helpers.pipeline.service import ensure_db  # noqa: E402
from aoai_helpers.synthetic.events import v2_reported_events  # noqa: E402

SPEC = ROOT / "examples" / "gateway.yaml"
GROUP = "$Default"  # the spec's event_hub.consumer_group
_STOPPED = re.compile(r"stopped: (\d+) batches, (\d+) received: (\d+) stored, (\d+) duplicates")


def fill_log(directory: Path, events: int, partitions: int, send: int) -> LocalEventLog:
    log = LocalEventLog(directory, fsync=False, partitions=partitions)
    with log.producer() as producer:
        chunk: list[bytes] = []
        for event in v2_reported_events(events, seed=1):
            chunk.append(json.dumps(event, separators=(",", ":")).encode())
            if len(chunk) == send:
                producer.send(chunk)
                chunk = []
        if chunk:
            producer.send(chunk)
    return log


def reset_group(log: LocalEventLog) -> None:
    """Forget the group's checkpoints and members: the next consumers start at the beginning."""
    for partition in log.partition_ids():
        log.checkpoint_path(GROUP, partition).unlink(missing_ok=True)
    shutil.rmtree(log.directory / OWNERS_DIR, ignore_errors=True)


def consume_cmd(state: Path, url: str, batch: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aoai_helpers",
        "consume",
        "--local",
        "--until-idle",
        "--spec",
        str(SPEC),
        "--state-dir",
        str(state),
        "--db",
        url,
        "--batch-size",
        str(batch),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_consumers(
    n: int, state: Path, url: str, batch: int
) -> tuple[float, float, list[dict[str, int]]]:
    """Start ``n`` consumer processes together; wall seconds until the last exits, their CPU
    seconds together (user + system), and what each said it did (batches, received, stored,
    duplicates, failed batches retried)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOAI_", "AZURE_"))}
    cpu = _children_cpu()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            consume_cmd(state, url, batch),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [proc.communicate(timeout=1800) for proc in procs]
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    shares = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        found = _STOPPED.search(out)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"consume failed ({proc.returncode}):\n{out}\n{err}")
        batches, received, stored, duplicates = (int(g) for g in found.groups())
        shares.append(
            {
                "batches": batches,
                "received": received,
                "stored": stored,
                "duplicates": duplicates,
                "retries": err.count("failed, not checkpointed"),
            }
        )
    return elapsed, cpu, shares


def count_rows(url: str) -> tuple[int, int]:
    """(rows, distinct RequestIds) of the token table."""
    engine = engine_from_url(url)
    try:
        with engine.connect() as conn:
            query = select(func.count(), func.count(token_table.c.RequestId.distinct()))
            rows, distinct = conn.execute(query).one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


def new_database(make_url: Callable[[], str], custom_plans: bool) -> str:
    url = make_url()
    engine = engine_from_url(url)
    try:
        ensure_db(engine)  # the schema first: racing processes would both try to create it
        if custom_plans and engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # see the module docstring
                name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
                conn.exec_driver_sql(
                    f'ALTER DATABASE "{name}" SET plan_cache_mode = force_custom_plan'
                )
    finally:
        engine.dispose()
    return url


def _pg_scalar(url: str, sql: str) -> int | None:
    """PostgreSQL: one integer ``sql`` answers (None for SQLite)."""
    engine = engine_from_url(url)
    try:
        if engine.dialect.name != "postgresql":
            return None
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())
    finally:
        engine.dispose()


def wal_position(url: str) -> int | None:
    """PostgreSQL: the server's write-ahead log position in bytes (None for SQLite)."""
    return _pg_scalar(url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")


def database_bytes(url: str) -> int:
    """The database's size on disk (SQLite: the file and its WAL)."""
    size = _pg_scalar(url, "SELECT pg_database_size(current_database())")
    if size is not None:
        return size
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _proc_cpu(pid: int, children: bool) -> float:
    """CPU seconds of ``pid`` (user + system; with ``children``, of its reaped children too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(data_dir: Path) -> float:
    """CPU seconds the PostgreSQL server has used: the postmaster, the backends it reaped,
    and the ones still running."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = _proc_cpu(pid, children=True)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += _proc_cpu(int(child), children=False)
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile: counted once reaped
    return total


def databases(
    tmp: Path, postgres: bool
) -> Iterator[tuple[str, Callable[[], str], Callable[[], float] | None]]:
    """(name, a function making a new empty database's URL, the server's CPU seconds so far)
    for SQLite (in the consumers' processes: no server) and, if it can be started, PostgreSQL
    (stopped when the generator is closed)."""
    counter = iter(range(1_000_000))
    yield "sqlite", lambda: f"sqlite:///{tmp / f'c{next(counter)}.db'}", None
    if not postgres:
        return
    from pg import PgServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        print("PostgreSQL: no initdb/pg_ctl found, skipped", flush=True)
        return
    server = PgServer(bin_dir).init()
    server.start()
    try:
        yield "postgresql", server.new_database, lambda: server_cpu(server.data)
    finally:
        server.destroy()


def one_run(
    args: argparse.Namespace,
    n: int,
    log: LocalEventLog,
    url: str,
    db_cpu: Callable[[], float] | None,
) -> dict[str, Any]:
    """Drain the log with ``n`` consumer processes into the empty database ``url``; check it."""
    reset_group(log)
    wal, size, server = wal_position(url), database_bytes(url), db_cpu() if db_cpu else None
    secs, cpu, shares = run_consumers(n, log.directory.parent, url, args.batch_size)
    run: dict[str, Any] = {"seconds": round(secs, 3), "cpu_seconds": round(cpu, 3)}
    if server is not None and db_cpu is not None:
        run["server_cpu_seconds"] = round(db_cpu() - server, 3)
    after = wal_position(url)
    if wal is not None and after is not None:
        run["wal_bytes_per_event"] = round((after - wal) / args.events)
    run["db_bytes_per_event"] = round((database_bytes(url) - size) / args.events)
    rows, distinct = count_rows(url)
    if (rows, distinct) != (args.events, args.events) or log.lag(GROUP) != 0:
        raise SystemExit(
            f"{n} consumer(s): {rows} rows, {distinct} distinct, lag {log.lag(GROUP)} "
            f"(want {args.events}, {args.events}, 0)"
        )
    run["processes"] = shares
    return run


def summarise(
    args: argparse.Namespace, runs: dict[int, list[dict[str, Any]]], fixed: float, fixed_cpu: float
) -> dict[str, Any]:
    """Best of the runs per consumer count, net figures, the 2/1 ratio, per-event costs."""
    summary: dict[str, Any] = {"fixed_cost_s": round(fixed, 3), "fixed_cost_cpu_s": fixed_cpu}
    per_k = 1_000_000 / args.events  # seconds per event → ms per 1,000 events
    for n, done in runs.items():
        best = min(r["seconds"] for r in done)
        entry: dict[str, Any] = {
            "best_seconds": best,
            "events_per_s": round(args.events / best),
            "net_events_per_s": round(args.events / max(best - fixed, 1e-9)),
            "consumer_cpu_ms_per_1000_events": round(
                (min(r["cpu_seconds"] for r in done) - n * fixed_cpu) * per_k, 1
            ),
        }
        if all("server_cpu_seconds" in r for r in done):
            entry["server_cpu_ms_per_1000_events"] = round(
                min(r["server_cpu_seconds"] for r in done) * per_k, 1
            )
        entry["runs"] = done
        summary[f"consumers_{n}"] = entry
    everything = [r for done in runs.values() for r in done]
    summary["db_bytes_per_event"] = min(r["db_bytes_per_event"] for r in everything)
    if all("wal_bytes_per_event" in r for r in everything):
        summary["wal_bytes_per_event"] = min(r["wal_bytes_per_event"] for r in everything)
    one, two = summary["consumers_1"], summary["consumers_2"]
    summary["ratio_2_to_1"] = round(two["events_per_s"] / one["events_per_s"], 2)
    summary["net_ratio_2_to_1"] = round(two["net_events_per_s"] / one["net_events_per_s"], 2)
    return summary


def print_summary(name: str, s: dict[str, Any]) -> None:
    one, two = s["consumers_1"], s["consumers_2"]
    print(
        f"{name:<10} 1 consumer {one['events_per_s']:>8,} events/s (net of the "
        f"{s['fixed_cost_s']:.2f} s fixed cost: {one['net_events_per_s']:,})  2 consumers "
        f"{two['events_per_s']:>8,} events/s (net {two['net_events_per_s']:,})  2/1 "
        f"{s['ratio_2_to_1']:.2f} (net {s['net_ratio_2_to_1']:.2f})",
        flush=True,
    )
    costs = f"consumer CPU {one['consumer_cpu_ms_per_1000_events']:.0f} ms/1,000 events"
    if "server_cpu_ms_per_1000_events" in one:
        costs += f", server CPU {one['server_cpu_ms_per_1000_events']:.0f} ms/1,000 events"
    costs += f", database growth {s['db_bytes_per_event']:,} B/event"
    if "wal_bytes_per_event" in s:
        costs += f", write-ahead log {s['wal_bytes_per_event']:,} B/event"
    print(f"{'':<10} costs (1 consumer, start-up excluded): {costs}", flush=True)


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Fill the log, then per database: the empty-log cost, the interleaved 1- and 2-consumer
    runs (each checked), their summary."""
    state = tmp / "state"
    print(f"writing {args.events:,} v2 events into {args.partitions} partitions …", flush=True)
    log = fill_log(state / "events", args.events, args.partitions, args.send)
    per_partition = [log.last_sequence_number(p) + 1 for p in log.partition_ids()]
    log_bytes = sum(
        (state / "events" / ("" if p == "0" else f"partitions/{p}") / "events.log").stat().st_size
        for p in log.partition_ids()
    )
    print(f"{per_partition} events per partition, {log_bytes / args.events:,.0f} bytes/event")
    empty = tmp / "empty"
    LocalEventLog(empty / "events", fsync=False, partitions=args.partitions)
    results: dict[str, Any] = {
        "partitions": per_partition,
        "log_bytes_per_event": round(log_bytes / args.events),
        "pg_plans": args.pg_plans,
    }
    custom = args.pg_plans == "custom"
    for name, make_url, db_cpu in databases(tmp, args.postgres):
        fixed, fixed_cpu = min(
            run_consumers(1, empty, new_database(make_url, custom), args.batch_size)[:2]
            for _ in range(args.repeat)
        )
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for n in (1, 2):
                run = one_run(args, n, log, new_database(make_url, custom), db_cpu)
                runs[n].append(run)
                server = (
                    f"  server CPU {run['server_cpu_seconds']:6.2f} s"
                    if "server_cpu_seconds" in run
                    else ""
                )
                print(
                    f"  {name:<10} {n} consumer(s) {run['seconds']:7.2f} s  "
                    f"{args.events / run['seconds']:>8,.0f} events/s  consumer CPU "
                    f"{run['cpu_seconds']:6.2f} s{server}  stored/retried per process "
                    f"{[(p['stored'], p['retries']) for p in run['processes']]}",
                    flush=True,
                )
        results[name] = summarise(args, runs, fixed, round(fixed_cpu, 3))
        print_summary(name, results[name])
    return results


def checkout() -> dict[str, Any]:
    """The commit measured, and the package files changed in the working tree beside it."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "aoai_helpers").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "changed": [line[3:] for line in changed]}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000, help="events in the log")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the log")
    ap.add_argument("--send", type=int, default=100, help="events per send (one partition each)")
    ap.add_argument("--batch-size", type=int, default=500, help="consume --batch-size")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each case (the best is kept)")
    ap.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also PostgreSQL when initdb/pg_ctl are found (default: yes)",
    )
    ap.add_argument(
        "--pg-plans",
        choices=("custom", "default"),
        default="custom",
        help="PostgreSQL plan_cache_mode: force_custom_plan (default) or the server's default",
    )
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "consumers.json"))
    args = ap.parse_args()

    cpus = os.cpu_count() or 1
    results: dict[str, Any] = {
        "code": checkout(),
        "machine": {
            "python": platform.python_version(),
            "cpus": cpus,
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "events": args.events,
        "batch_size": args.batch_size,
        "repeat": args.repeat,
    }
    print(
        f"{cpus} CPU core(s), load average {os.getloadavg()[0]:.2f}: 2 consumer processes"
        + (" (and the PostgreSQL server)" if args.postgres else "")
        + f" share {cpus} core(s), so the 2/1 ratio is bounded by the cores, not by the "
        "partition ownership",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="aoai-bench-consumers-") as tmp_name:
        results.update(measure(args, Path(tmp_name)))
    results["note"] = (
        f"{cpus} core(s): the 2-consumer figure is bounded by the cores (the consumers and, for "
        "PostgreSQL, the server share them); SQLite lets one writer commit at a time"
    )
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"note: {results['note']}")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
