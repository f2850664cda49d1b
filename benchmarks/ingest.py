"""Ingest benchmark: whole-process events/s and peak RSS (run by ``make bench``).

What it measures, each as a separate ``python -m aoai_helpers ingest`` process (start-up,
imports, reading, parsing, usage resolution, pricing, SQLite inserts and commits included), with
the default worker choice (one preparing process beside the writer on a 2-core machine for
inputs of 16 MB or more) unless said otherwise:

1. ``v2_reported``    100,000 v2 events with reported usage, in time order, into a new SQLite file.
   ``v2_in_process``  the same with ``--workers 0`` (one process).
2. ``v1_reported``    the same 100,000 calls as the original policy logged them (v1: the body with
                      its usage in ResponseString).
3. ``v1_streamed``    100,000 v1 streamed chat events whose usage must be estimated (tiktoken).
5. ``v1_mix``         100,000 v1 events in the original project's real mix (70 % chat, 20 %
                      captured streams to estimate, 10 % embeddings with their vectors), measured
                      against the storage limit: its own finished rows re-inserted with one
                      ``executemany`` into an empty copy of the schema (same run); so is (1).
                      With PostgreSQL binaries, (1) and (5) run into a real server too.
4. ``original``       the original function's per-event work on the v1 mix of (5), same engine
                      (a SQLite file with the original schema and SQLite's defaults): parse, log,
                      connect, INSERT, COMMIT per event, on the first ``--original-events`` events
                      (its rate does not depend on the count); compared with (1) and (2).
5. ``rss_1m``         1,000,000 v2 events from one JSONL file: peak RSS of all processes together
                      (sampled from /proc every 20 ms), and throughput at that size.

Inputs are generated first (not timed) with :mod:`aoai_helpers.synthetic.events`. Results are printed
and written to ``bench-results/ingest.json``. Targets (issue #2): (1) ≥ 20,000 events/s,
(1) ≥ 30x (4), (5) < 300 MB (all processes together). (2) against (4) compares both pipelines on
literally the same input and is reported, not targeted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aoai_helpers.db.engine import engine_from_url  # noqa: E402
from aoai_helpers.db.schema import init_db  # noqa: E402
from aoai_helpers.pipeline.writer import ROW_COLUMNS, RowWriter  # noqa: E402
from aoai_helpers.synthetic.events import (  # noqa: E402
    v1_from_v2,
    v1_real_mix,
    v1_stream_events,
    v2_reported_events,
)

_ORIGINAL_DDL = """
CREATE TABLE ApimAoaiToken (
    ExecTimeUTC datetime NOT NULL, ExecDateUTC datetime NOT NULL,
    GatewayRegion nvarchar(100), GatewayServiceName nvarchar(150), SubscriptionId nvarchar(50),
    SubscriptionName nvarchar(100), UserName nvarchar(50), UserEmail nvarchar(50),
    ProductName nvarchar(100), ApiName nvarchar(100), OperationId nvarchar(100),
    ModelName nvarchar(100), IsStreaming tinyint NOT NULL, PromptTokens int NOT NULL,
    CompletionTokens int NOT NULL, TotalTokens int NOT NULL);
CREATE INDEX indx_ExecDate ON ApimAoaiToken (ExecDateUTC);
CREATE INDEX indx_ExecTime ON ApimAoaiToken (ExecTimeUTC);
"""

# The original function's per-event work, restated (its logic, not its code): validate the
# body as JSON, parse it again, dispatch on OperationId, parse the ResponseString body for the
# usage (a streamed call: tiktoken counts of the prompt and the captured content), log five
# INFO lines and the whole event (the Functions host collects them: here a log
# file), then connect, INSERT and COMMIT for that one event.
_ORIGINAL_SCRIPT = r"""
import json, logging, sqlite3, sys
db, path, limit, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ENC = None
def load():  # tiktoken's encoding, built once per host process (bundled file: no download)
    global ENC
    from aoai_helpers.core.tokenizer_files import get_encoding
    ENC = get_encoding("cl100k_base")
    return ENC
logging.basicConfig(filename=log, level=logging.INFO)
with open(path, encoding="utf-8") as fh:
    for n, line in enumerate(fh):
        if n >= limit:
            break
        try:
            json.loads(line)
        except ValueError:
            logging.info("AOAI-No json found!")
            continue
        ev = json.loads(line)
        op = (ev.get("OperationId") or "").lower()
        if op not in ("chatcompletions_create", "completions_create", "embeddings_create"):
            logging.info("AOAI-No available OperationId found!")
            continue
        req = ev.get("Request", {})
        model = req.get("model", "Unknown")
        if req.get("stream"):  # streamed: count prompt and captured content with tiktoken
            enc = ENC or load()
            prompt = sum(len(enc.encode(m.get("content") or "")) + 4 for m in req["messages"])
            completion = len(enc.encode(ev.get("ResponseString") or ""))
            total = prompt + completion
        else:
            body = json.loads(ev.get("ResponseString") or "{}")
            usage = body.get("usage", {})
            prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            total = usage.get("total_tokens", 0)
        for text in (f"AOAI-model name: {model}", f"AOAI-prompt token: {prompt}",
                     f"AOAI-completion token: {completion}", f"AOAI-total token: {total}"):
            logging.info(text)
        t = ev.get("ExecTimeUTC", "1970-01-01 00:00:00")
        conn = sqlite3.connect(db)
        conn.execute(
            "INSERT INTO ApimAoaiToken VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (t, t[:10], ev.get("GatewayRegion", ""), ev.get("GatewayServiceName", ""),
             ev.get("SubscriptionId", ""), ev.get("SubscriptionName", ""), ev.get("UserName", ""),
             ev.get("UserEmail", ""), ev.get("ProductName", ""), ev.get("ApiName", ""),
             ev.get("OperationId", ""), model, 0, prompt, completion, total),
        )
        conn.commit()
        conn.close()
        logging.info(json.dumps(ev))
    logging.info(f"AOAI-Total events received in one time function call: {n}")
"""


def write_jsonl(path: Path, events: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":"), ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, from /proc (0 once it has exited)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS:")
            )
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def run_measured(cmd: list[str]) -> tuple[float, int, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process, peak RSS of its whole process
    tree — the process plus any worker processes, sampled every 20 ms — and stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    tree_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        while not done.is_set():
            tree_peak = max(tree_peak, _tree_rss(proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _pid, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    own_peak = rusage.ru_maxrss * 1024
    return elapsed, own_peak, max(tree_peak, own_peak), out.strip()


#: Runs measured against the storage limit too, with the share of it each must reach.
LIMITED: dict[str, float] = {"v1_mix": 0.60, "v2_reported": 0.80}


def _limit(results: dict[str, Any], name: str, url: str, fresh_url: str, key: str = "") -> None:
    """Measure the storage limit of run ``name``'s rows and its share of it, in this run."""
    entry = results[key or name]
    # in a child process: this one stays small, so the runs after it measure their own RSS
    done = subprocess.run(
        [sys.executable, __file__, "--limit-of", url, fresh_url],
        capture_output=True,
        text=True,
        check=True,
    )
    rows, limit = json.loads(done.stdout)
    entry["limit_rows_per_s"] = round(limit)
    entry["share_of_limit"] = round(entry["events_per_s"] / limit, 3)
    print(
        f"{'':<14} storage limit: {limit:,.0f} rows/s ({rows:,} rows, one executemany); "
        f"ingest = {entry['share_of_limit']:.0%} of it (goal >= {LIMITED[name]:.0%})",
        flush=True,
    )


def _postgres(results: dict[str, Any], events: int, inputs: dict[str, Path]) -> None:
    """The same runs into a real PostgreSQL server (the tests' throwaway one)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import PgServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        print("postgresql: no server binaries (apt-get install postgresql): skipped")
        return
    server = PgServer(bin_dir).init()
    try:
        server.start()
        for name, src in inputs.items():
            url = server.new_database()
            secs, _own, tree_rss, out = run_measured(ingest_cmd(url, src, None))
            engine = engine_from_url(url)
            with engine.connect() as conn:
                stored = conn.exec_driver_sql('SELECT COUNT(*) FROM "ApimAoaiToken"').scalar()
            engine.dispose()
            if stored != events:
                raise SystemExit(f"pg_{name}: expected {events} rows, found {stored} ({out})")
            key = f"pg_{name}"
            results[key] = {
                "events": events,
                "seconds": round(secs, 3),
                "events_per_s": round(events / secs),
                "peak_rss_mb": round(tree_rss / 2**20, 1),
            }
            report(key, events, secs, tree_rss)
            _limit(results, name, url, server.new_database(), key)
    finally:
        server.destroy()


def ingest_cmd(db: str, jsonl: Path, workers: int | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "aoai_helpers",
        "ingest",
        str(jsonl),
        "--db",
        db,
        "--no-progress",
    ]
    return cmd if workers is None else [*cmd, "--workers", str(workers)]


def report(name: str, events: int, secs: float, rss: int, extra: str = "") -> None:
    print(
        f"{name:<14} {events:>9,} events  {secs:7.2f} s  {events / secs:>9,.0f} events/s  "
        f"peak RSS {rss / 2**20:6.1f} MB (all processes){extra}",
        flush=True,
    )


def storage_limit(url: str, fresh_url: str) -> tuple[int, float]:
    """The raw insert limit of the rows ingested into ``url``: its finished rows (every column
    ingest writes) re-inserted into an empty copy of the schema at ``fresh_url`` with one
    DB-API ``executemany`` of the writer's own statement, in one transaction. (rows, rows/s)"""
    source = engine_from_url(url)
    cols = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
    with source.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(f'SELECT {cols} FROM "ApimAoaiToken"')]
    source.dispose()
    target = engine_from_url(fresh_url)
    init_db(target)
    writer = RowWriter(target.dialect)
    params = writer.params(rows)
    raw = target.raw_connection()
    try:
        cur = raw.cursor()
        began = time.perf_counter()
        cur.executemany(writer.row_sql, params)
        raw.commit()
        seconds = time.perf_counter() - began
    finally:
        raw.close()
        target.dispose()
    return len(rows), len(rows) / seconds


def count_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM ApimAoaiToken").fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000, help="events for the throughput runs")
    ap.add_argument(
        "--rss-events", type=int, default=1_000_000, help="events for the peak-RSS run (0 = skip)"
    )
    ap.add_argument(
        "--original-events",
        type=int,
        default=5_000,
        help="events for the original per-event method",
    )
    ap.add_argument("--limit-of", nargs=2, metavar=("URL", "FRESH_URL"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-postgres", dest="postgres", action="store_false", help="skip the PostgreSQL runs"
    )
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "ingest.json"))
    args = ap.parse_args()
    if args.limit_of:  # the child of _limit
        print(json.dumps(storage_limit(*args.limit_of)))
        return 0

    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="aoai-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"generating inputs in {tmp} …", flush=True)
        v2 = tmp / "v2.jsonl"
        v1 = tmp / "v1.jsonl"
        v1_plain = tmp / "v1_plain.jsonl"
        write_jsonl(v2, v2_reported_events(args.events, seed=1))
        write_jsonl(v1_plain, (v1_from_v2(e) for e in v2_reported_events(args.events, seed=1)))
        write_jsonl(v1, v1_stream_events(args.events, seed=2))

        v1_mix = tmp / "v1_mix.jsonl"
        write_jsonl(v1_mix, v1_real_mix(args.events, seed=4))

        runs = (
            ("v2_reported", v2, None),  # None: the default (auto) worker count, what users get
            ("v2_in_process", v2, 0),
            ("v1_reported", v1_plain, None),
            ("v1_streamed", v1, None),
            ("v1_mix", v1_mix, None),
        )
        for name, src, workers in runs:
            db = tmp / f"{name}.db"
            secs, own_rss, tree_rss, out = run_measured(ingest_cmd(str(db), src, workers))
            rows = count_rows(db)
            if rows != args.events:
                raise SystemExit(f"{name}: expected {args.events} rows, found {rows} ({out})")
            results[name] = {
                "events": args.events,
                "workers": "auto" if workers is None else workers,
                "seconds": round(secs, 3),
                "events_per_s": round(args.events / secs),
                "peak_rss_mb": round(tree_rss / 2**20, 1),
                "peak_rss_main_mb": round(own_rss / 2**20, 1),
            }
            report(name, args.events, secs, tree_rss)
            if name in LIMITED:
                _limit(results, name, f"sqlite:///{db}", f"sqlite:///{tmp / (name + '-limit.db')}")

        if args.postgres:
            _postgres(results, args.events, {"v2_reported": v2, "v1_mix": v1_mix})

        db = tmp / "original.db"
        with sqlite3.connect(db) as conn:
            conn.executescript(_ORIGINAL_DDL)
        n = min(args.original_events, args.events)
        cmd = [
            sys.executable,
            "-c",
            _ORIGINAL_SCRIPT,
            str(db),
            str(v1_mix),
            str(n),
            str(tmp / "original.log"),
        ]
        secs, _own, _tree, _ = run_measured(cmd)
        if count_rows(db) != n:
            raise SystemExit("original: row count mismatch")
        rate = n / secs
        results["original"] = {
            "events": n,
            "seconds": round(secs, 3),
            "events_per_s": round(rate),
            "input": "v1_mix",
            "speedup_v1_mix_same_events": round(results["v1_mix"]["events_per_s"] / rate, 1),
            "speedup_v2": round(results["v2_reported"]["events_per_s"] / rate, 1),
        }
        print(
            f"{'original':<12} {n:>9,} events  {secs:7.2f} s  {rate:>9,.0f} events/s  "
            f"(same v1 mix: {results['original']['speedup_v1_mix_same_events']:.0f}x slower than ours; "
            f"v2: {results['original']['speedup_v2']:.0f}x)",
            flush=True,
        )

        if args.rss_events:
            big = tmp / "v2_big.jsonl"
            write_jsonl(big, v2_reported_events(args.rss_events, seed=3))
            size = big.stat().st_size
            db = tmp / "rss.db"
            secs, own_rss, tree_rss, _ = run_measured(ingest_cmd(str(db), big, None))
            if count_rows(db) != args.rss_events:
                raise SystemExit("rss: row count mismatch")
            results["rss_1m"] = {
                "events": args.rss_events,
                "file_mb": round(size / 2**20),
                "seconds": round(secs, 2),
                "events_per_s": round(args.rss_events / secs),
                "peak_rss_mb": round(tree_rss / 2**20, 1),
                "peak_rss_main_mb": round(own_rss / 2**20, 1),
            }
            report("rss_1m", args.rss_events, secs, tree_rss, f"  (file {size / 2**20:,.0f} MB)")

    targets = {
        "v2_reported >= 20,000 events/s": results["v2_reported"]["events_per_s"] >= 20_000,
        "v2_reported >= 30x original": results["original"]["speedup_v2"] >= 30,
        "v1_mix >= 100x original (same events)": results["original"]["speedup_v1_mix_same_events"]
        >= 100,
    }
    for key in [k for k in results if k.removeprefix("pg_") in LIMITED]:
        goal = LIMITED[key.removeprefix("pg_")]
        if "share_of_limit" in results[key]:
            targets[f"{key} >= {goal:.0%} of the storage limit"] = (
                results[key]["share_of_limit"] >= goal
            )
    if "rss_1m" in results:
        targets["1M events peak RSS < 300 MB"] = results["rss_1m"]["peak_rss_mb"] < 300
    results["targets"] = targets
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    print(f"wrote {out_path}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
