"""Report benchmark: ``report --month`` over 1M and 10M calls vs an empty database (``make bench``).

What it measures:

For each size of ``--rows`` (default 1,000,000 and 10,000,000):

1. ``generate``   :func:`aoai_helpers.synthetic.rows.generate` writes that many synthetic
   calls of ``--month`` into a new SQLite file (the bundled spec, seed 0): rows/s of the
   whole run (schema, BU map, drawing in a worker process, inserts, budgets).
2. ``report``     ``python -m aoai_helpers report --month M --db …`` as separate processes
   (start-up, imports, every query, printing), on that file and on an empty database created
   with ``db init``; one warm-up run each, then the median of ``--runs`` interleaved runs.
   The bar (issue #17): the full database answers within 0.05 s of the empty one (the
   reports read the daily rollup, so the number of calls does not matter).
3. ``library``    :func:`aoai_helpers.analysis.report.chargeback_by_bu` + ``unpriced_models`` in this
   process (the SQL alone, median of ``--runs``).
4. ``pandas``     the same per-BU answer the way a notebook might do it without the SQL:
   ``pd.read_sql`` of the month's rows (every column) and the BU map, merge, ``groupby``
   (one run: it is slow; only up to ``--pandas-max`` rows); its figures, summed from the
   rows, are checked against (3), read from the rollup.

Results are printed as a table and written to ``bench-results/report.json``. Exit status 1
when the bar is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aoai_helpers.analysis.report import chargeback_by_bu, month_bounds, unpriced_models  # noqa: E402
from aoai_helpers.config import spec_path  # noqa: E402
from aoai_helpers.db.engine import engine_from_url  # noqa: E402
from aoai_helpers.pipeline.service import ensure_db  # noqa: E402
from aoai_helpers.spec import load_spec  # noqa: E402
from aoai_helpers.synthetic.rows import GenerateProgress, generate  # noqa: E402

#: The bar (issue #17): a month of any size answers within this much of an empty database.
BAR_SECONDS = 0.05


def _report_seconds(db: str, month: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aoai_helpers", "report", "--month", month, "--db", db],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"report failed on {db}: {done.stderr.strip()}")
    return seconds


def _pandas(db: str, month: str) -> tuple[float, dict[str, tuple[int, int, float]]]:
    import pandas as pd
    from sqlalchemy import text

    start, end = month_bounds(month)
    engine = engine_from_url(db)
    began = time.perf_counter()
    with engine.connect() as conn:
        calls = pd.read_sql(
            text('SELECT * FROM "ApimAoaiToken" WHERE "ExecTimeUTC" >= :s AND "ExecTimeUTC" < :e'),
            conn,
            params={"s": str(start), "e": str(end)},
        )
        units = pd.read_sql(text('SELECT * FROM "BusinessUnitMap"'), conn)
    merged = calls.merge(units[["SubscriptionId", "BusinessUnit"]], on="SubscriptionId", how="left")
    merged["bu"] = (
        merged["BusinessUnit"]
        .fillna(merged["SubscriptionName"])
        .fillna(merged["SubscriptionId"])
        .fillna("(no subscription)")
    )
    grouped = merged.groupby("bu").agg(
        calls=("Id", "size"), total=("TotalTokens", "sum"), cost=("Cost", "sum")
    )
    seconds = time.perf_counter() - began
    engine.dispose()
    figures = {str(bu): (int(r.calls), int(r.total), float(r.cost)) for bu, r in grouped.iterrows()}
    return seconds, figures


def _sizes(value: str) -> list[int]:
    sizes = [int(v.replace("_", "")) for v in value.split(",") if v.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"row counts must be positive integers, not {value!r}")
    return sizes


def _measure_size(
    folder: Path, rows: int, month: str, runs: int, empty: str, pandas: bool
) -> dict[str, Any]:
    """Generate ``rows`` calls, then time ``report`` on them against the empty database."""
    full_db = folder / f"report-{rows}.db"
    for f in folder.glob(f"report-{rows}.db*"):
        f.unlink()
    full = f"sqlite:///{full_db}"
    print(f"generate: {rows:,} calls of {month} into {full_db} …", flush=True)

    def progress(p: GenerateProgress) -> None:
        if p.done == p.total or p.done % 1_000_000 < 50_000:
            print(f"  {p.done:,} rows ({p.done / p.seconds:,.0f} rows/s)", flush=True)

    engine = engine_from_url(full)
    generated = generate(engine, load_spec(spec_path()), rows=rows, month=month, progress=progress)
    print(f"  {generated.summary()}")
    print(f"report: 1 warm-up + {runs} runs on each database, interleaved …", flush=True)
    _report_seconds(empty, month)
    _report_seconds(full, month)
    times: dict[str, list[float]] = {"empty": [], "full": []}
    for _ in range(runs):
        times["empty"].append(_report_seconds(empty, month))
        times["full"].append(_report_seconds(full, month))
    median = {k: statistics.median(v) for k, v in times.items()}
    library = []
    for _ in range(runs):
        began = time.perf_counter()
        charges = chargeback_by_bu(engine, month)
        unpriced_models(engine, month)
        library.append(time.perf_counter() - began)
    engine.dispose()
    pandas_seconds = None
    if pandas:
        print("pandas: read_sql of the month, merge, groupby …", flush=True)
        pandas_seconds, figures = _pandas(full, month)
        for c in charges:  # the rollup's answer against the rows', summed by pandas
            calls, total, cost = figures[c.business_unit]
            if (calls, total) != (c.calls, c.total_tokens) or abs(cost - c.cost) > 1e-6 * max(
                1.0, c.cost
            ):
                raise SystemExit(f"pandas and SQL disagree on {c.business_unit}")
    full_db.unlink()
    extra = median["full"] - median["empty"]
    return {
        "rows": rows,
        "generate_seconds": round(generated.seconds, 2),
        "generate_rows_per_s": round(generated.rows_per_second),
        "report_empty_s": [round(t, 3) for t in times["empty"]],
        "report_full_s": [round(t, 3) for t in times["full"]],
        "report_empty_median_s": round(median["empty"], 3),
        "report_full_median_s": round(median["full"], 3),
        "report_extra_s": round(extra, 3),
        "library_median_s": round(statistics.median(library), 4),
        "pandas_s": None if pandas_seconds is None else round(pandas_seconds, 2),
        "passed": extra <= BAR_SECONDS,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rows", type=_sizes, default=[1_000_000, 10_000_000], help="row counts, comma-separated"
    )
    ap.add_argument("--month", default="2026-11")
    ap.add_argument("--runs", type=int, default=5, help="timed report runs per database (≥ 3)")
    ap.add_argument("--keep", metavar="DIR", help="keep the databases in DIR (default: a temp dir)")
    ap.add_argument(
        "--pandas-max",
        type=int,
        default=1_000_000,
        help="run the pandas comparison up to this many rows (0: never; it loads the month)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "report.json"))
    args = ap.parse_args()
    runs = max(3, args.runs)

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        empty_db = folder / "report-empty.db"
        for f in folder.glob("report-empty.db*"):
            f.unlink()
        empty = f"sqlite:///{empty_db}"
        empty_engine = engine_from_url(empty)
        ensure_db(empty_engine)
        empty_engine.dispose()
        sizes = [
            _measure_size(folder, n, args.month, runs, empty, n <= args.pandas_max)
            for n in args.rows
        ]

    results: dict[str, Any] = {
        "month": args.month,
        "sizes": sizes,
        "bar_s": BAR_SECONDS,
        "passed": all(s["passed"] for s in sizes),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    table: list[tuple[str, str, str]] = []
    for s in sizes:
        n = s["rows"]
        table += [
            (
                f"{n:,} rows: generate",
                f"{s['generate_rows_per_s']:,} rows/s",
                f"{s['generate_seconds']:.1f} s",
            ),
            (f"{n:,} rows: report, empty db (median)", f"{s['report_empty_median_s']:.3f} s", ""),
            (f"{n:,} rows: report, full db (median)", f"{s['report_full_median_s']:.3f} s", ""),
            (
                f"{n:,} rows: difference",
                f"{s['report_extra_s']:+.3f} s",
                f"bar <= {BAR_SECONDS} s: {'PASS' if s['passed'] else 'FAIL'}",
            ),
            (f"{n:,} rows: library, SQL only (median)", f"{s['library_median_s']:.4f} s", ""),
        ]
        if s["pandas_s"] is not None:
            table.append(
                (f"{n:,} rows: pandas read_sql + groupby", f"{s['pandas_s']:.2f} s", "same figures")
            )
    width = max(len(r[0]) for r in table)
    print()
    for name, value, note in table:
        print(f"{name:<{width}}  {value:>16}  {note}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
