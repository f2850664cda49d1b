"""Function benchmark: CPU time of the built ingestion function per batch (``make bench``).

What it measures: the deployment zip is built (``function build``) and unpacked; a fresh Python
process imports ``function_app`` from the unpacked folder only (no network, empty tiktoken
cache) and invokes the indexed Event Hubs function with real ``azure.functions.EventHubEvent``
batches of ``--batch`` v2 events (reported usage, as APIM logs them), into a new SQLite file.
Per batch: CPU time of the process (``time.process_time``) and wall time, after one warm-up
batch (first-call costs: engine, schema, rate book). The bar (issue #5): a batch of 1,000
events in well under a second of CPU. Results go to ``bench-results/function.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aoai_helpers.azure.functions.build import build_zip, unpack  # noqa: E402

CHILD = r"""
import json, sys, time, datetime
import azure.functions as func
from aoai_helpers.synthetic.events import v2_reported_events
import function_app

batch, batches = int(sys.argv[1]), int(sys.argv[2])
(fn,) = [f for f in function_app.app.get_functions() if f.get_function_name() == "ingest_usage"]
user = fn.get_user_function()
events = list(v2_reported_events(batch * (batches + 1), seed=11))
def hub(chunk, first):
    return [func.EventHubEvent(body=json.dumps(e).encode(), sequence_number=first + i, offset=str(first + i),
                               enqueued_time=datetime.datetime.now(datetime.timezone.utc), partition_key=None)
            for i, e in enumerate(chunk)]
user(hub(events[:batch], 0))  # warm-up
out = []
for b in range(1, batches + 1):
    chunk = hub(events[b * batch:(b + 1) * batch], b * batch)
    c0, w0 = time.process_time(), time.perf_counter()
    user(chunk)
    out.append((time.process_time() - c0, time.perf_counter() - w0))
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "function.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fn-") as tmp:
        built = build_zip(Path(tmp) / "dist")
        app = unpack(built.path, Path(tmp) / "app")
        cache = Path(tmp) / "tiktoken-cache"
        cache.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AOAI_", "AZURE_"))}
        env.update(
            PYTHONPATH=str(app),
            TIKTOKEN_CACHE_DIR=str(cache),
            AOAI_DB_URL=f"sqlite:///{tmp}/fn.db",
            AOAI_EVENTHUB_NAME="aoai-usage",
            AOAI_EVENTHUB_CONSUMER_GROUP="$Default",
        )
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.batch), str(args.batches)],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 2
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = sorted(r[0] * 1000 for r in runs)
    wall = sorted(r[1] * 1000 for r in runs)
    result = {
        "batch": args.batch,
        "batches": args.batches,
        "zip_bytes": built.size_bytes,
        "cpu_ms_p50": round(statistics.median(cpu), 1),
        "cpu_ms_max": round(cpu[-1], 1),
        "wall_ms_p50": round(statistics.median(wall), 1),
        "events_per_cpu_second": round(args.batch / (statistics.median(cpu) / 1000)),
    }
    print(
        f"function: {args.batches} batches of {args.batch} v2 events: CPU p50 {result['cpu_ms_p50']} ms "
        f"(max {result['cpu_ms_max']} ms), wall p50 {result['wall_ms_p50']} ms; zip {built.size_bytes:,} bytes"
    )
    ok = result["cpu_ms_max"] < 1000
    print(
        f"bar: a batch of {args.batch} in well under a second of CPU: {'met' if ok else 'MISSED'}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
