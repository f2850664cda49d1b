"""``demo`` and ``notebooks run|report``: the guide notebooks as commands (papermill)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from aoai_helpers.cli._options import DB_HELP, announce, database_url
from aoai_helpers.config import spec_path
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_notebook_parsers", "cmd_demo"]


def _say(line: str) -> None:
    print(line, flush=True)


def _print_chargeback(url: str, month: str | None) -> None:
    from aoai_helpers.analysis.report import chargeback_by_bu, latest_month, unpriced_models
    from aoai_helpers.analysis.text import render_table
    from aoai_helpers.db.engine import engine_from_url

    engine = engine_from_url(url)
    month = month or latest_month(engine)
    if month:
        print(render_table(chargeback_by_bu(engine, month), month, unpriced_models(engine, month)))
    engine.dispose()


def cmd_demo(args: argparse.Namespace) -> int:
    if args.sample_only:
        return _sample_demo(args)
    from aoai_helpers.db.engine import masked_url
    from aoai_helpers.notebook_steps.runner import run_notebook_demo

    started = time.monotonic()
    out = Path(args.out)
    run = run_notebook_demo(out, spec_path=spec_path(args.spec), db_url=args.db, progress=_say)
    print()
    _print_chargeback(run.db_url, run.month)
    print()
    print(f"demo finished in {time.monotonic() - started:.0f} s; everything it started is stopped")
    print(f"  database:           {masked_url(run.db_url)}")
    print(f"  HTML report:        {run.report}")
    print(f"  statement (XLSX):   {run.statement_xlsx}")
    print(f"  statement (CSV):    {run.statement_csv}")
    print(f"  executed notebooks: {out / 'notebooks'}")
    return 0


def _sample_demo(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import engine_from_url, masked_url
    from aoai_helpers.synthetic.demo import run_demo

    engine = engine_from_url(database_url(args))
    print(f"demo: ingesting the bundled sample events into {masked_url(str(engine.url))}")
    result = run_demo(engine)
    print(result.ingest.summary())
    print()
    _print_chargeback(engine.url.render_as_string(hide_password=False), result.month)
    return 0


def cmd_notebooks_run(args: argparse.Namespace) -> int:
    from aoai_helpers.notebook_steps.runner import CLEAN_UP, GUIDE, run_notebook

    names = [*GUIDE, CLEAN_UP]
    chosen = (
        [n for n in names if any(n.startswith(o) for o in args.only)] if args.only else list(GUIDE)
    )
    if args.only and not chosen:
        raise ConfigError(f"no notebook matches {', '.join(args.only)} (have: {', '.join(names)})")
    parameters: dict[str, Any] = {
        "mode": args.mode,
        "spec_path": str(spec_path(args.spec).resolve()),
    }
    if args.db:
        parameters["db_url"] = args.db
    if args.month:
        parameters["month"] = args.month
    parameters["state_dir"] = str(Path(args.state_dir).resolve())
    parameters["out_dir"] = str(Path(args.out).resolve())
    for name in chosen:
        started = time.monotonic()
        executed = run_notebook(name, Path(args.out) / "notebooks", parameters)
        print(f"{name}: ok in {time.monotonic() - started:.1f} s -> {executed}", flush=True)
    return 0


def cmd_notebooks_report(args: argparse.Namespace) -> int:
    from aoai_helpers.analysis.report import month_bounds
    from aoai_helpers.notebook_steps.runner import render_report

    if args.month:
        month_bounds(args.month)
    url = database_url(args)
    announce(url)
    html = render_report(args.out, db_url=url, month=args.month, spec_path=args.spec)
    print(f"report: {html}")
    return 0


def add_notebook_parsers(sub: Any) -> None:
    """Register ``demo`` and ``notebooks run|report``."""
    db_help = DB_HELP
    p = sub.add_parser(
        "demo",
        help="the whole local pipeline end to end: a month of traffic, notebooks 00-04, report",
    )
    p.add_argument("--db", metavar="URL", help="database (default: OUT/demo.db, recreated)")
    p.add_argument("--spec", metavar="FILE", help="deployment spec (default: the bundled sample)")
    p.add_argument("--out", default="out", metavar="DIR", help="output directory (default: out)")
    p.add_argument(
        "--sample-only",
        action="store_true",
        help="only ingest the bundled sample events into --db and print the table",
    )
    p.set_defaults(func=cmd_demo)

    nb = sub.add_parser("notebooks", help="run the guide notebooks with papermill").add_subparsers(
        dest="notebooks_command", required=True, metavar="ACTION"
    )
    p = nb.add_parser("run", help="execute notebooks 00-04 (or --only some) into OUT/notebooks")
    p.add_argument("--mode", choices=("local", "azure"), default="local")
    p.add_argument("--only", nargs="+", metavar="NN", help="e.g. --only 00 03 99")
    p.add_argument("--spec", metavar="FILE")
    p.add_argument("--db", metavar="URL", help=db_help)
    p.add_argument("--month", metavar="YYYY-MM")
    p.add_argument("--state-dir", default=".aoai-local", metavar="DIR")
    p.add_argument("--out", default="out", metavar="DIR")
    p.set_defaults(func=cmd_notebooks_run)
    p = nb.add_parser(
        "report",
        help="run notebook 04 on a database: OUT/report.html (finance's) and OUT/04_cost_analysis.html",
    )
    p.add_argument("--spec", metavar="FILE")
    p.add_argument("--db", metavar="URL", help=db_help)
    p.add_argument("--month", metavar="YYYY-MM", help="default: the latest month with calls")
    p.add_argument("--out", default="out", metavar="DIR")
    p.set_defaults(func=cmd_notebooks_report)
