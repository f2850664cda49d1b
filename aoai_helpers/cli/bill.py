"""CLI: ``bill import FILE`` (Azure's cost details for the Azure OpenAI resources) and
``bill list`` (the imported months). Coverage and the invoice allocation are shown by
``report`` (:mod:`aoai_helpers.billing.text`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aoai_helpers.cli._options import existing_engine, with_db
from aoai_helpers.exceptions import InputError

__all__ = ["add_bill_parser", "cmd_bill_import", "cmd_bill_list"]


def _meter_map(args: argparse.Namespace) -> Any:
    from aoai_helpers.billing.meters import MeterMap

    mapping = MeterMap()
    if args.meter_map:
        path = Path(args.meter_map)
        try:
            text = path.read_text("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        mapping.add_csv(text, path.name)
    for option in args.meter or []:
        mapping.add_option(option)
    return mapping


def cmd_bill_import(args: argparse.Namespace) -> int:
    from aoai_helpers.billing.store import import_cost_details
    from aoai_helpers.billing.text import import_line
    from aoai_helpers.core.terminal import safe

    mapping = _meter_map(args)  # a bad --meter is heard before the database is opened
    summary = import_cost_details(
        existing_engine(args),
        args.file,
        meters=mapping,
        cost_type=args.cost_type,
        currency=args.currency,
    )
    print(safe(import_line(summary)))
    return 0


def cmd_bill_list(args: argparse.Namespace) -> int:
    from aoai_helpers.billing.store import list_imports
    from aoai_helpers.billing.text import imports_lines
    from aoai_helpers.core.terminal import safe

    for line in imports_lines(list_imports(existing_engine(args))):
        print(safe(line))
    return 0


def add_bill_parser(sub: Any) -> None:
    """Register ``bill`` and its actions."""
    bill = sub.add_parser(
        "bill", help="Azure's bill: import cost details to check coverage and split the invoice"
    ).add_subparsers(dest="bill_command", required=True, metavar="ACTION")
    p = with_db(
        bill.add_parser(
            "import",
            help="import the Azure OpenAI lines of a Cost Management cost-details CSV "
            "(actual or amortized; EA, MCA, or an older EA / Azure China usage file)",
        )
    )
    p.add_argument("file", help="the CSV export (a month re-imported replaces its lines)")
    p.add_argument(
        "--meter",
        action="append",
        metavar='"NAME=model:kind"',
        help="map a meter by hand (kind: input, output, cached_input, or NAME=none for cost "
        "that is not tokens); repeatable",
    )
    p.add_argument(
        "--meter-map",
        metavar="CSV",
        help="meters mapped by hand: columns MeterName,Model,TokenKind",
    )
    p.add_argument(
        "--cost-type",
        choices=("actual", "amortized", "usage"),
        help="what the file is (default: usage for the older columns, amortized if it shows "
        "unused reservations or is named so, else actual)",
    )
    p.add_argument(
        "--currency", help="the billing currency, for files without one (older EA usage files)"
    )
    p.set_defaults(func=cmd_bill_import)
    p = with_db(bill.add_parser("list", help="the imported months, cost types and totals"))
    p.set_defaults(func=cmd_bill_list)
