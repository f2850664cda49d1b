"""CLI: ``bu set|import|list`` — the APIM subscription → business unit map."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aoai_helpers.cli._argtypes import money
from aoai_helpers.cli._options import existing_engine, open_engine, with_db
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_bu_parser"]


def cmd_bu_set(args: argparse.Namespace) -> int:
    from aoai_helpers.core.terminal import safe
    from aoai_helpers.db.business_units import BusinessUnit, set_bu
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.pipeline.service import ensure_db

    engine = open_engine(args)
    ensure_db(engine)
    unit = BusinessUnit(
        args.subscription_id, args.business_unit, args.name, args.cost_centre, args.budget
    )
    with transaction(engine) as conn:
        set_bu(conn, [unit])
    print(f"{safe(args.subscription_id)} → {safe(args.business_unit)}")
    return 0


def cmd_bu_import(args: argparse.Namespace) -> int:
    from aoai_helpers.db.business_units import import_bu_csv, set_bu
    from aoai_helpers.db.engine import transaction
    from aoai_helpers.pipeline.service import ensure_db

    try:
        text = Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from None
    units = import_bu_csv(text)
    engine = open_engine(args)
    ensure_db(engine)
    with transaction(engine) as conn:
        n = set_bu(conn, units)
    print(f"{n} subscription(s) mapped")
    return 0


def cmd_bu_list(args: argparse.Namespace) -> int:
    from aoai_helpers.core.terminal import safe
    from aoai_helpers.db.business_units import read_bu_map
    from aoai_helpers.db.engine import transaction

    with transaction(existing_engine(args)) as conn:
        units = read_bu_map(conn)
    for u in units:  # names escaped before they are padded: the widths are those printed
        print(
            f"{safe(u.subscription_id):<40} {safe(u.business_unit):<24} "
            f"{safe(u.cost_centre or '-'):<12} {safe(u.subscription_name or '')}"
        )
    if not units:
        print("no mappings: business unit = subscription name")
    return 0


def add_bu_parser(sub: Any) -> None:
    """Register ``bu`` and its actions."""
    bu = sub.add_parser("bu", help="subscription → business unit map").add_subparsers(
        dest="bu_command", required=True, metavar="ACTION"
    )
    p = with_db(bu.add_parser("set", help="map one APIM subscription to a business unit"))
    p.add_argument("subscription_id")
    p.add_argument("business_unit")
    p.add_argument("--name", help="subscription display name")
    p.add_argument("--cost-centre")
    p.add_argument("--budget", type=money, help="monthly budget in the rate currency")
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
