"""CLI: ``rates list|set|import|export|defaults|reprice`` — the token rates and repricing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aoai_helpers.cli._argtypes import date, money
from aoai_helpers.cli._options import existing_engine, open_engine, with_db
from aoai_helpers.exceptions import ConfigError

if TYPE_CHECKING:
    from aoai_helpers.core.pricing import Rate

__all__ = ["add_rates_parser"]

_HEADER = f"{'model':<26} {'input/1M':>10} {'cached/1M':>10} {'output/1M':>10} cur  from        to          source"


def _row(r: Rate) -> str:
    cached = "-" if r.cached_prompt_rate is None else f"{r.cached_prompt_rate * 1e6:.4g}"
    to = r.effective_to.date().isoformat() if r.effective_to else "open"
    return (
        f"{r.model_name:<26} {r.prompt_rate * 1e6:>10.4g} {cached:>10} {r.completion_rate * 1e6:>10.4g} "
        f"{r.currency:<4} {r.effective_from.date().isoformat()}  {to:<10}  {r.source}"
    )


def cmd_rates_list(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.db.rates import read_rates

    with transaction(existing_engine(args)) as conn:
        rates = read_rates(conn)
    if args.at:
        rates = [r for r in rates if r.covers(args.at)]
    if not rates:
        print(
            "no rates: every call is unpriced until you add some (rates defaults / rates set / rates import)"
        )
        return 0
    print(_HEADER)
    for r in rates:
        print(_row(r))
    return 0


def _apply_rates(args: argparse.Namespace, rates: list[Rate]) -> int:
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.pipeline.reprice import set_rates
    from aoai_helpers.pipeline.service import ensure_db

    engine = open_engine(args)
    ensure_db(engine, seed_default_rates=False)
    with transaction(engine) as conn:
        repriced = set_rates(conn, rates)
    print(f"{len(rates)} rate(s) set; {repriced} stored call(s) repriced")
    return 0


def cmd_rates_set(args: argparse.Namespace) -> int:
    from aoai_helpers.core.pricing import make_rate

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
    from aoai_helpers.core.pricing import parse_rates_csv

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
    from aoai_helpers.core.pricing import rates_to_csv
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.db.rates import read_rates

    with transaction(existing_engine(args)) as conn:
        text = rates_to_csv(read_rates(conn))
    if args.file:
        Path(args.file).write_text(text, "utf-8")
        print(f"wrote {args.file}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_rates_reprice(args: argparse.Namespace) -> int:
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.pipeline.reprice import reprice

    with transaction(existing_engine(args)) as conn:
        n = reprice(conn, model=args.model, start=args.since)
    print(f"{n} stored call(s) repriced")
    return 0


def _add_set(rates: Any) -> None:
    p = with_db(
        rates.add_parser(
            "set", help="set a model's rate (USD per 1M tokens by default) and reprice its calls"
        )
    )
    p.add_argument("model")
    p.add_argument("--input", type=money, required=True, help="price per 1M prompt tokens")
    p.add_argument("--output", type=money, required=True, help="price per 1M completion tokens")
    p.add_argument(
        "--cached", type=money, help="price per 1M cached prompt tokens (default: the input price)"
    )
    p.add_argument("--currency", default="USD")
    p.add_argument(
        "--from", dest="effective_from", type=date, help="effective from (default: always)"
    )
    p.add_argument(
        "--to", dest="effective_to", type=date, help="effective until (exclusive; default: open)"
    )
    p.add_argument("--source", help="where the price comes from")
    p.set_defaults(func=cmd_rates_set)


def add_rates_parser(sub: Any) -> None:
    """Register ``rates`` and its actions."""
    rates = sub.add_parser("rates", help="token rates").add_subparsers(
        dest="rates_command", required=True, metavar="ACTION"
    )
    p = with_db(rates.add_parser("list", help="list rates"))
    p.add_argument("--at", type=date, help="only the rates in effect at this date")
    p.set_defaults(func=cmd_rates_list)
    _add_set(rates)
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
    p.add_argument("--since", type=date)
    p.set_defaults(func=cmd_rates_reprice)
