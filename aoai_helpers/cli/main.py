"""Thin command line over the library: ``python -m aoai_helpers COMMAND …``.

The library raises :class:`~aoai_helpers.exceptions.AoaiHelpersError`; this module turns it into
one line on stderr and a non-zero exit status. Secrets (database passwords) are never printed.

Exit status: 0 success (every event stored, or set aside as a dead letter); 1 bad input or
configuration; 2 usage error (argparse); 3 database unreachable or failing; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aoai_helpers import __version__
from aoai_helpers.cli._argtypes import whole as _whole
from aoai_helpers.cli.azure import add_provision_parser
from aoai_helpers.cli.function import add_function_parsers
from aoai_helpers.cli.local import add_local_parser
from aoai_helpers.cli.notebooks import add_notebook_parsers
from aoai_helpers.cli.reconcile import add_reconcile_parser
from aoai_helpers.config import db_url
from aoai_helpers.core.pricing import Rate, make_rate, parse_rates_csv, rates_to_csv
from aoai_helpers.core.terminal import safe
from aoai_helpers.db.store import engine_from_url, masked_url, require_schema, transaction
from aoai_helpers.exceptions import AoaiHelpersError, ConfigError, DatabaseError

__all__ = ["build_parser", "main"]


def _engine(args: argparse.Namespace) -> Any:
    return engine_from_url(db_url(getattr(args, "db", None)))


def _existing_engine(args: argparse.Namespace) -> Any:
    """For read commands: the database must exist and have the tables (never created here)."""
    return require_schema(db_url(getattr(args, "db", None)))


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _mapping(text: str) -> tuple[str, str]:
    name, sep, model = text.partition("=")
    if not sep or not name.strip() or not model.strip():
        raise argparse.ArgumentTypeError(f"expected DEPLOYMENT=MODEL, not {text!r}")
    return name.strip(), model.strip()


def _money(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


# --- commands ---------------------------------------------------------------------------------


def cmd_db_init(args: argparse.Namespace) -> int:
    from aoai_helpers.pipeline.service import ensure_db

    engine = _engine(args)
    changes = ensure_db(engine, seed_default_rates=not args.no_default_rates)
    print(
        f"database {masked_url(str(engine.url))}: "
        + ("; ".join(changes) if changes else "up to date")
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aoai_helpers.db.migrate import upgrade
    from aoai_helpers.db.store import sqlite_path

    url = db_url(getattr(args, "db", None))
    file = sqlite_path(url)
    if file is not None and not file.is_file():
        raise ConfigError(
            f"no database file at {file}: nothing to upgrade (db init creates a new database)"
        )
    result = upgrade(engine_from_url(url), seed_default_rates=not args.no_default_rates)
    lines = result.lines()
    print(lines[0])
    for line in lines[1:]:
        print(f"  {line}")
    return 0


def cmd_db_ddl(args: argparse.Namespace) -> int:
    from aoai_helpers.db.store import ddl

    if args.from_original:
        from aoai_helpers.db.migrate_tsql import migration_tsql

        if args.dialect != "mssql":
            raise ConfigError("--from-original is T-SQL only (--dialect mssql)")
        sys.stdout.write(migration_tsql())
        return 0
    sys.stdout.write(ddl(args.dialect))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from aoai_helpers.pipeline.service import ensure_db, ingest_files

    paths = [Path(p) for p in args.files]
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise ConfigError(
            "a folder, not a file: " + ", ".join(folders) + " (name the files, e.g. DIR/*.jsonl)"
        )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError("no such file: " + ", ".join(missing))
    engine = _engine(args)
    ensure_db(engine)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = None
    if show:
        from tqdm import tqdm

        compressed = any(p.suffix == ".gz" for p in paths)  # progress counts decompressed bytes
        bar = tqdm(
            total=None if compressed else sum(p.stat().st_size for p in paths),
            unit="B",
            unit_scale=True,
            desc="ingest",
            file=sys.stderr,
        )
    try:
        result = ingest_files(
            engine,
            paths,
            batch_size=args.batch_size,
            on_bytes=bar.update if bar else None,
            workers=args.workers,
            deployment_models=dict(args.model_map or []),
            default_model=args.default_model,
        )
    finally:
        if bar:
            bar.close()
    print(result.summary())
    if result.unknown_models:
        print(
            "unknown models (estimated with o200k_base, priced only if a rate exists): "
            + ", ".join(sorted(result.unknown_models))
        )
    return 0


def cmd_rates_list(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import read_rates

    with transaction(_existing_engine(args)) as conn:
        rates = read_rates(conn)
    if args.at:
        rates = [r for r in rates if r.covers(args.at)]
    if not rates:
        print(
            "no rates: every call is unpriced until you add some (rates defaults / rates set / rates import)"
        )
        return 0
    print(
        f"{'model':<26} {'input/1M':>10} {'cached/1M':>10} {'output/1M':>10} cur  from        to          source"
    )
    for r in rates:
        cached = "-" if r.cached_prompt_rate is None else f"{r.cached_prompt_rate * 1e6:.4g}"
        to = r.effective_to.date().isoformat() if r.effective_to else "open"
        print(
            f"{r.model_name:<26} {r.prompt_rate * 1e6:>10.4g} {cached:>10} {r.completion_rate * 1e6:>10.4g} "
            f"{r.currency:<4} {r.effective_from.date().isoformat()}  {to:<10}  {r.source}"
        )
    return 0


def _apply_rates(args: argparse.Namespace, rates: list[Rate]) -> int:
    from aoai_helpers.db.rates import set_rates
    from aoai_helpers.pipeline.service import ensure_db

    engine = _engine(args)
    ensure_db(engine, seed_default_rates=False)
    with transaction(engine) as conn:
        repriced = set_rates(conn, rates)
    print(f"{len(rates)} rate(s) set; {repriced} stored call(s) repriced")
    return 0


def cmd_rates_set(args: argparse.Namespace) -> int:
    rate = make_rate(
        args.model,
        args.input / 1e6,
        args.output / 1e6,
        None if args.cached is None else args.cached / 1e6,
        currency=args.currency,
        effective_from=args.effective_from,
        effective_to=args.effective_to,
        source=args.source or "set by hand",
    )
    return _apply_rates(args, [rate])


def cmd_rates_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return _apply_rates(args, parse_rates_csv(text, default_source=f"imported from {path.name}"))


def cmd_rates_defaults(args: argparse.Namespace) -> int:
    from aoai_helpers.core.pricing import default_rates

    return _apply_rates(args, default_rates())


def cmd_rates_export(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import read_rates

    with transaction(_existing_engine(args)) as conn:
        text = rates_to_csv(read_rates(conn))
    if args.file:
        Path(args.file).write_text(text, "utf-8")
        print(f"wrote {args.file}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_rates_reprice(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import reprice

    with transaction(_existing_engine(args)) as conn:
        n = reprice(conn, model=args.model, start=args.since)
    print(f"{n} stored call(s) repriced")
    return 0


def cmd_bu_set(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import BusinessUnit, set_bu
    from aoai_helpers.pipeline.service import ensure_db

    engine = _engine(args)
    ensure_db(engine)
    unit = BusinessUnit(
        args.subscription_id, args.business_unit, args.name, args.cost_centre, args.budget
    )
    with transaction(engine) as conn:
        set_bu(conn, [unit])
    print(f"{safe(args.subscription_id)} → {safe(args.business_unit)}")
    return 0


def cmd_bu_import(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import import_bu_csv, set_bu
    from aoai_helpers.pipeline.service import ensure_db

    try:
        text = Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from None
    units = import_bu_csv(text)
    engine = _engine(args)
    ensure_db(engine)
    with transaction(engine) as conn:
        n = set_bu(conn, units)
    print(f"{n} subscription(s) mapped")
    return 0


def cmd_bu_list(args: argparse.Namespace) -> int:
    from aoai_helpers.db.rates import read_bu_map

    with transaction(_existing_engine(args)) as conn:
        units = read_bu_map(conn)
    for u in units:  # names escaped before they are padded: the widths are those printed
        print(
            f"{safe(u.subscription_id):<40} {safe(u.business_unit):<24} "
            f"{safe(u.cost_centre or '-'):<12} {safe(u.subscription_name or '')}"
        )
    if not units:
        print("no mappings: business unit = subscription name")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import importlib

    from aoai_helpers.analysis.budget import allocate, parse_amount
    from aoai_helpers.analysis.report import (
        latest_month,
        month_bounds,
        render_table,
        unpriced_models,
    )
    from aoai_helpers.analysis.statement import (
        issue_statement,
        month_report,
        statement,
        statement_drift,
    )

    # the user's first mistakes to hear about, before the database is opened
    if args.month:
        month_bounds(args.month)
    amount = None if args.allocate is None else parse_amount(args.allocate)
    if args.xlsx:  # a missing extra is a one-line error (main) before any work
        importlib.import_module("openpyxl")
    engine = _existing_engine(args)
    month = args.month or latest_month(engine)
    if month is None:
        if args.issue or args.reissue:
            raise ConfigError("no calls stored yet: there is no statement to issue")
        print("no calls stored yet")
        return 0
    if args.issue or args.reissue:
        stmt = issue_statement(
            engine,
            month,
            reissue=args.reissue,
            grace=_grace(args),
            allow_provisional=args.allow_provisional,
        )
    else:
        stmt = statement(engine, month)
    print(render_table(stmt.lines, month, None if stmt.issued else unpriced_models(engine, month)))
    if args.issue or args.reissue:
        print(
            f"Statement {month}: {stmt.describe()} (a snapshot: later rate edits do not change it)"
        )
    elif stmt.issued:
        print(f"Statement {month}: {stmt.describe()}")
        changed = [d for d in statement_drift(engine, month) if d.changed]
        if changed:
            print(
                "  live figures differ since (rates edited or calls added): "
                + "; ".join(
                    f"{safe(d.business_unit)} {d.cost_delta:+,.4f}"
                    + (f" {safe(d.live.currency)}" if d.live and d.live.currency else "")
                    for d in changed
                )
                + f" — replace it with: report --month {month} --reissue"
            )
    else:
        print(
            f"Statement {month}: live (not issued; snapshot it with: report --month {month} --issue)"
        )
    if amount is not None:
        parts = allocate(amount, stmt.lines)
        print(
            f"Allocation of {amount:,.2f} by token share: "
            + (
                ", ".join(f"{safe(a.business_unit)} {a.amount:,.2f} ({a.share:.1%})" for a in parts)
                or "-"
            )
        )
    if args.xlsx or args.csv:
        from aoai_helpers.analysis.export import write_csv, write_xlsx

        report = month_report(engine, month, allocate_amount=amount, top=args.top)
        if args.xlsx:
            print(f"wrote {safe(write_xlsx(args.xlsx, report))}")
        if args.csv:
            print(f"wrote {safe(write_csv(args.csv, report))}")
    return 0


def _grace(args: argparse.Namespace) -> Any:
    """The spec's ``reconcile.grace_hours`` (``--spec``, ``$AOAI_SPEC``, ``./gateway.yaml`` or
    the bundled sample) as a timedelta."""
    from datetime import timedelta

    from aoai_helpers.config import spec_path
    from aoai_helpers.spec import load_spec

    return timedelta(hours=load_spec(spec_path(args.spec)).reconcile.grace_hours)


def cmd_tokens_verify(args: argparse.Namespace) -> int:
    from aoai_helpers.core.tokens import verify_tokenizer_files

    for name, sha in verify_tokenizer_files().items():
        print(f"{name}: sha256 {sha} (matches tiktoken's published hash)")
    return 0


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree (also used by the test that checks every command is documented)."""
    parser = argparse.ArgumentParser(
        prog="python -m aoai_helpers",
        description="Bill Azure OpenAI usage captured by APIM back to business units.",
    )
    parser.add_argument("--version", action="version", version=f"apim-aoai-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db_help = "SQLAlchemy URL or SQLite file path (default: $AOAI_DB_URL, else sqlite:///data/aoai_usage.db)"

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", metavar="URL", help=db_help)
        return p

    p = with_db(sub.add_parser("ingest", help="ingest usage events from JSONL/JSON files"))
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSONL (one event per line), JSON array or object; .gz ok",
    )
    p.add_argument(
        "--batch-size", type=_whole(1), default=5000, help="events per transaction (default 5000)"
    )
    p.add_argument(
        "--model-map",
        action="append",
        type=_mapping,
        metavar="DEPLOYMENT=MODEL",
        help="the model behind a deployment name, for events whose response names none (repeatable)",
    )
    p.add_argument(
        "--default-model",
        metavar="MODEL",
        help="model of events that name none at all (v1 streams whose requests carry no model)",
    )
    p.add_argument(
        "--workers",
        type=_whole(0),
        default=None,
        help="processes preparing batches while one writes (default: one per spare core for inputs of 16 MB or more; 0 = in-process)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    p.set_defaults(func=cmd_ingest)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    p = with_db(
        db.add_parser(
            "init", help="create or upgrade the schema (seeds default rates into a new rate table)"
        )
    )
    p.add_argument(
        "--no-default-rates", action="store_true", help="do not seed the default rate set"
    )
    p.set_defaults(func=cmd_db_init)
    p = with_db(
        db.add_parser(
            "upgrade",
            help="migrate a database of the original APIM-AOAI-Proxy (or an older schema) in place",
        )
    )
    p.add_argument(
        "--no-default-rates",
        action="store_true",
        help="do not seed the default rate set into a rate table it creates",
    )
    p.set_defaults(func=cmd_db_upgrade)
    p = db.add_parser("ddl", help="print the schema as SQL (T-SQL for Azure SQL by default)")
    p.add_argument("--dialect", choices=["mssql", "postgresql", "sqlite"], default="mssql")
    p.add_argument(
        "--from-original",
        action="store_true",
        help="print the T-SQL migration from the original schema (sql/migrate_from_original.sql)",
    )
    p.set_defaults(func=cmd_db_ddl)

    rates = sub.add_parser("rates", help="token rates").add_subparsers(
        dest="rates_command", required=True, metavar="ACTION"
    )
    p = with_db(rates.add_parser("list", help="list rates"))
    p.add_argument("--at", type=_date, help="only the rates in effect at this date")
    p.set_defaults(func=cmd_rates_list)
    p = with_db(
        rates.add_parser(
            "set", help="set a model's rate (USD per 1M tokens by default) and reprice its calls"
        )
    )
    p.add_argument("model")
    p.add_argument("--input", type=_money, required=True, help="price per 1M prompt tokens")
    p.add_argument("--output", type=_money, required=True, help="price per 1M completion tokens")
    p.add_argument(
        "--cached", type=_money, help="price per 1M cached prompt tokens (default: the input price)"
    )
    p.add_argument("--currency", default="USD")
    p.add_argument(
        "--from", dest="effective_from", type=_date, help="effective from (default: always)"
    )
    p.add_argument(
        "--to", dest="effective_to", type=_date, help="effective until (exclusive; default: open)"
    )
    p.add_argument("--source", help="where the price comes from")
    p.set_defaults(func=cmd_rates_set)
    p = with_db(
        rates.add_parser("import", help="import rates from CSV (see rates export for the columns)")
    )
    p.add_argument("file")
    p.set_defaults(func=cmd_rates_import)
    p = with_db(rates.add_parser("export", help="write the rates as CSV"))
    p.add_argument("file", nargs="?")
    p.set_defaults(func=cmd_rates_export)
    p = with_db(rates.add_parser("defaults", help="load the bundled default (list price) rate set"))
    p.set_defaults(func=cmd_rates_defaults)
    p = with_db(
        rates.add_parser("reprice", help="recompute the cost of stored calls from the rates")
    )
    p.add_argument("--model")
    p.add_argument("--since", type=_date)
    p.set_defaults(func=cmd_rates_reprice)

    bu = sub.add_parser("bu", help="subscription → business unit map").add_subparsers(
        dest="bu_command", required=True, metavar="ACTION"
    )
    p = with_db(bu.add_parser("set", help="map one APIM subscription to a business unit"))
    p.add_argument("subscription_id")
    p.add_argument("business_unit")
    p.add_argument("--name", help="subscription display name")
    p.add_argument("--cost-centre")
    p.add_argument("--budget", type=_money, help="monthly budget in the rate currency")
    p.set_defaults(func=cmd_bu_set)
    p = with_db(
        bu.add_parser(
            "import",
            help="import subscription_id,business_unit[,subscription_name,cost_centre,monthly_budget] CSV",
        )
    )
    p.add_argument("file")
    p.set_defaults(func=cmd_bu_import)
    p = with_db(bu.add_parser("list", help="list mappings"))
    p.set_defaults(func=cmd_bu_list)

    p = with_db(
        sub.add_parser(
            "report",
            help="print the per-BU chargeback for a month; issue its statement; write XLSX/CSV",
        )
    )
    p.add_argument("--month", help="YYYY-MM (default: the month of the latest call)")
    p.add_argument(
        "--xlsx",
        metavar="FILE",
        help="also write the month as an Excel workbook (Summary + one sheet per BU; needs the notebooks extra)",
    )
    p.add_argument(
        "--csv", metavar="FILE", help="also write the per-BU statement as CSV (one row per BU)"
    )
    p.add_argument(
        "--allocate",
        metavar="AMOUNT",
        help="split a fixed monthly amount (e.g. provisioned throughput) across BUs by token share",
    )
    p.add_argument(
        "--top", type=_whole(1), default=10, help="top users per BU in the workbook (default 10)"
    )
    issue = p.add_mutually_exclusive_group()
    issue.add_argument(
        "--issue",
        action="store_true",
        help="snapshot the month's figures as its issued statement (refused if already issued)",
    )
    issue.add_argument(
        "--reissue", action="store_true", help="replace the issued statement with the live figures"
    )
    p.add_argument(
        "--allow-provisional",
        action="store_true",
        help="issue even with provisional calls inside the reconcile grace window",
    )
    p.add_argument(
        "--spec", metavar="FILE", help="spec whose reconcile.grace_hours applies (default: found)"
    )
    p.set_defaults(func=cmd_report)

    add_local_parser(sub, with_db)
    add_provision_parser(sub)
    add_function_parsers(sub, with_db)
    add_notebook_parsers(sub)
    add_reconcile_parser(sub)

    tokens = sub.add_parser("tokens", help="offline tokenizer").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    tokens.add_parser(
        "verify", help="check the bundled tokenizer files against tiktoken's hashes"
    ).set_defaults(func=cmd_tokens_verify)
    return parser


#: Optional packages → the extra that installs them (a missing one is a one-line error).
_EXTRAS = {
    "uvicorn": "local",
    "httpx": "local",
    "openai": "local",
    "azure": "azure",
    "psycopg": "postgres",
    "pyodbc": "mssql",
    "pandas": "notebooks",
    "plotly": "notebooks",
    "openpyxl": "notebooks",
    "papermill": "notebooks",
    "nbconvert": "notebooks",
    "nbformat": "notebooks",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except AoaiHelpersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        extra = _EXTRAS.get(missing)
        if extra is None:
            raise
        print(
            f"error: {missing} is not installed; this command needs: pip install 'apim-aoai-proxy[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: batches already committed are stored; run again to continue (duplicates are skipped)",
            file=sys.stderr,
        )
        return 130
