"""Report benchmark: ``report --month`` (and its files) over 1M and 10M calls vs a tiny month.

Run by ``make bench``; ``--rows 300000`` (or ``--rows 100000 --runs 3 --file-runs 1``) is a quick
run.

What it measures:

For each size of ``--rows`` (default 1,000,000 and 10,000,000):

1. ``generate``   :func:`aoai_helpers.synthetic.rows.generate` writes that many synthetic
   calls of ``--month`` into a new SQLite file (the bundled spec, seed 0): rows/s of the
   whole run (schema, BU map, drawing in a worker process, inserts, budgets).
2. ``report``     ``python -m aoai_helpers report --month M --db …`` as separate processes
   (start-up, imports, every query, printing), on that file and on a peer database with only
   ``--peer-rows`` (default 1,000) calls of the same month, generated the same way; one warm-up
   run each, then the median of ``--runs`` interleaved runs. The bar (issue #17): the full
   database answers within 0.05 s of the peer (the reports read the daily rollup, so the
   number of calls does not matter). The peer is not an empty database: since issue #18,
   ``report --month M`` of a month without calls is an error, and it stops before the
   statement modules are imported, so it would not be the same work.
3. ``outputs``    the finance outputs of issue #18, each as separate processes on the full
   database, interleaved with a plain ``report --month M`` of the same database (its peer; the
   difference is the cost of writing that output); one warm-up each, then the median of
   ``--file-runs`` (default 3). No bar: the figures are printed beside the plain report.

   * ``html``      ``report --month M --html F``: the finance report over every month in the
     database (:mod:`aoai_helpers.analysis.finance_html`). Per month it builds
     :func:`~aoai_helpers.analysis.statement.month_report`, whose ``top_users`` (not in the
     covering index) and ``rates_used`` (the rollup has no rate column) each read the month's
     rows: they dominate and grow with the number of calls (in-process at 100k calls: 0.32 s
     and 0.09 s of ``month_report``'s 0.43 s); the rest reads the rollup; the page itself
     (tables, SVG charts) grows with BUs and days, not calls.
   * ``xlsx_csv``  ``report --month M --xlsx F --csv F``: one ``month_report`` (the same two
     passes over the month's rows dominate) and the workbook (openpyxl, a sheet per BU:
     import ~0.4 s and writing ~0.4 s at 100k calls, growing with BUs and top users, not
     calls) and the per-BU CSV
     (:mod:`aoai_helpers.analysis.workbook`, :mod:`aoai_helpers.analysis.export`).
   * ``focus``     ``report --month M --focus F``: the FOCUS CSV
     (:mod:`aoai_helpers.analysis.focus`): groups from the daily rollup priced from the rate
     table, one row per day x subscription x model x deployment x source x token kind; the
     time is formatting those rows' cells (~1,600 rows of 45 columns at 100k calls), so it
     grows with groups, which stop growing with calls; the call table is read only for a day
     and model whose rate changes within the day (none in the bundled spec).

4. ``library``    :func:`aoai_helpers.analysis.report.chargeback_by_bu` + ``unpriced_models`` in this
   process (the SQL alone, median of ``--runs``).
5. ``pandas``     the same per-BU answer the way a notebook might do it without the SQL:
   ``pd.read_sql`` of the month's rows (every column) and the BU map, merge, ``groupby``
   (one run: it is slow; only up to ``--pandas-max`` rows); its figures, summed from the
   rows, are checked against (4), read from the rollup.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aoai_helpers.analysis.report import chargeback_by_bu, month_bounds, unpriced_models  # noqa: E402
from aoai_helpers.config import spec_path  # noqa: E402
from aoai_helpers.db.engine import engine_from_url  # noqa: E402
from aoai_helpers.spec import load_spec  # noqa: E402
from aoai_helpers.synthetic.rows import GenerateProgress, generate  # noqa: E402

#: The bar (issue #17): a month of any size answers within this much of a month of a few calls.
BAR_SECONDS = 0.05


#: The finance outputs timed beside the plain report: name -> (label, options; ``{f}`` is
#: replaced by a path in the databases' folder).
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "html": ("--html F", ("--html", "{f}.html")),
    "xlsx_csv": ("--xlsx F --csv F", ("--xlsx", "{f}.xlsx", "--csv", "{f}.csv")),
    "focus": ("--focus F", ("--focus", "{f}.focus.csv")),
}


def _report_seconds(db: str, month: str, extra: Sequence[str] = ()) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aoai_helpers", "report", "--month", month, "--db", db, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"report {' '.join(extra)} failed on {db}: {done.stderr.strip()}")
    return seconds


def _outputs(folder: Path, rows: int, full: str, month: str, runs: int) -> dict[str, Any]:
    """Time each of :data:`OUTPUTS` against a plain ``report`` of ``full``, interleaved: one
    warm-up of each, then ``runs`` rounds of plain, html, xlsx + csv, focus."""
    stem = folder / f"report-{rows}-out"
    options = {k: [o.replace("{f}", str(stem)) for o in v[1]] for k, v in OUTPUTS.items()}
    files = {k: [Path(o) for o in v if o.startswith(str(stem))] for k, v in options.items()}
    labels = ", ".join(label for label, _ in OUTPUTS.values())
    print(f"outputs: 1 warm-up + {runs} runs each of plain, {labels}, interleaved …", flush=True)
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in OUTPUTS}}
    for name in times:  # the warm-up writes the files: their sizes go into the results
        _report_seconds(full, month, options.get(name, []))
    sizes = {
        k: {f.name.removeprefix(stem.name): f.stat().st_size for f in v} for k, v in files.items()
    }
    if not all(b for v in sizes.values() for b in v.values()):
        raise SystemExit(f"an output file is empty: {sizes}")
    for _ in range(runs):
        for name, series in times.items():
            series.append(_report_seconds(full, month, options.get(name, [])))
    for f in (f for v in files.values() for f in v):
        f.unlink(missing_ok=True)
    plain = statistics.median(times["plain"])
    out: dict[str, Any] = {
        "plain_s": [round(t, 3) for t in times["plain"]],
        "plain_median_s": round(plain, 3),
    }
    for name, (label, _) in OUTPUTS.items():
        median = statistics.median(times[name])
        out[name] = {
            "command": f"report --month {month} {label}",
            "runs_s": [round(t, 3) for t in times[name]],
            "median_s": round(median, 3),
            "extra_over_plain_s": round(median - plain, 3),
            "file_bytes": sizes[name],
        }
    return out


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


def _peer(folder: Path, rows: int, month: str) -> str:
    """The peer database: ``rows`` calls of ``month``, generated as the full ones are."""
    path = folder / "report-peer.db"
    for f in folder.glob("report-peer.db*"):
        f.unlink()
    engine = engine_from_url(f"sqlite:///{path}")
    generate(engine, load_spec(spec_path()), rows=rows, month=month)
    engine.dispose()
    return f"sqlite:///{path}"


def _measure_size(
    folder: Path, rows: int, month: str, runs: int, file_runs: int, peer: str, pandas: bool
) -> dict[str, Any]:
    """Generate ``rows`` calls, then time ``report`` on them against the peer database."""
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
    _report_seconds(peer, month)
    _report_seconds(full, month)
    times: dict[str, list[float]] = {"peer": [], "full": []}
    for _ in range(runs):
        times["peer"].append(_report_seconds(peer, month))
        times["full"].append(_report_seconds(full, month))
    median = {k: statistics.median(v) for k, v in times.items()}
    outputs = _outputs(folder, rows, full, month, file_runs)
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
    extra = median["full"] - median["peer"]
    return {
        "rows": rows,
        "generate_seconds": round(generated.seconds, 2),
        "generate_rows_per_s": round(generated.rows_per_second),
        "report_peer_s": [round(t, 3) for t in times["peer"]],
        "report_full_s": [round(t, 3) for t in times["full"]],
        "report_peer_median_s": round(median["peer"], 3),
        "report_full_median_s": round(median["full"], 3),
        "report_extra_s": round(extra, 3),
        "outputs": outputs,
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
    ap.add_argument(
        "--file-runs",
        type=int,
        default=3,
        help="timed runs of each output (--html, --xlsx/--csv, --focus) and its plain peer (>= 1)",
    )
    ap.add_argument(
        "--peer-rows",
        type=int,
        default=1_000,
        help="calls in the peer database the report is compared with (>= 1)",
    )
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
    file_runs = max(1, args.file_runs)
    if args.peer_rows < 1:
        ap.error("--peer-rows must be at least 1 (a month without calls is an error)")

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        peer = _peer(folder, args.peer_rows, args.month)
        sizes = [
            _measure_size(folder, n, args.month, runs, file_runs, peer, n <= args.pandas_max)
            for n in args.rows
        ]

    results: dict[str, Any] = {
        "month": args.month,
        "peer_rows": args.peer_rows,
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
            (
                f"{n:,} rows: report, peer db (median)",
                f"{s['report_peer_median_s']:.3f} s",
                f"{args.peer_rows:,} calls of the month",
            ),
            (f"{n:,} rows: report, full db (median)", f"{s['report_full_median_s']:.3f} s", ""),
            (
                f"{n:,} rows: difference",
                f"{s['report_extra_s']:+.3f} s",
                f"bar <= {BAR_SECONDS} s: {'PASS' if s['passed'] else 'FAIL'}",
            ),
        ]
        o = s["outputs"]
        table.append(
            (
                f"{n:,} rows: report, full db, outputs' peer (median)",
                f"{o['plain_median_s']:.3f} s",
                "",
            )
        )
        for name, (label, _) in OUTPUTS.items():
            table.append(
                (
                    f"{n:,} rows: report {label} (median)",
                    f"{o[name]['median_s']:.3f} s",
                    f"{o[name]['extra_over_plain_s']:+.3f} s over the plain report",
                )
            )
        table.append(
            (f"{n:,} rows: library, SQL only (median)", f"{s['library_median_s']:.4f} s", "")
        )
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
