"""CLI: ``provision destroy`` — remove what ``provision apply`` and ``function deploy`` created.

Registered on the ``provision`` actions that :func:`aoai_helpers.cli.azure.add_provision_parser`
returns (this module imports cli.azure, never the reverse). Plan first, like every
command that changes Azure: without ``--apply`` it only shows the plan (``--offline``: without
credentials or network, assuming everything exists, with the exact requests a dry run of the
SDK calls sends). ``--apply`` plans against what exists, shows the plan, asks for confirmation
(``--yes`` to skip; required when stdin is not a terminal), then deletes. What is deleted and
what is kept: :mod:`aoai_helpers.azure.apim.cleanup`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aoai_helpers.cli.azure import azure_errors, azure_target_args, sign_in, spec_from_args
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_destroy_parser", "cmd_provision_destroy"]


def cmd_provision_destroy(args: argparse.Namespace) -> int:
    from aoai_helpers.azure.apim.cleanup import (
        apply_cleanup,
        cleanup_dry_run,
        make_cleanup_clients,
        plan_cleanup,
    )

    spec = spec_from_args(args)
    recorded: list[dict[str, Any]] = []
    if args.offline:
        if args.apply:
            raise ConfigError("--offline only plans: drop --offline to apply")
        the_plan = plan_cleanup(spec, cloud=args.cloud)
        print(the_plan.render())
        with azure_errors():
            dry = cleanup_dry_run(spec, cloud=args.cloud)
        print()
        print(dry.render())
        recorded = dry.rows()
        clients = web = None
    else:
        with azure_errors():
            clients, web = make_cleanup_clients(spec, *sign_in(spec, args))
            the_plan = plan_cleanup(spec, clients=clients, web=web, cloud=args.cloud)
        print(the_plan.render())
    if args.json:
        data = the_plan.to_dict()
        data["dry_run_requests"] = recorded
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", "utf-8")
        print(f"plan written to {args.json}")
    if not args.apply:
        print("\nnothing deleted: run again with --apply to delete")
        return 0
    assert clients is not None
    todo = the_plan.counts()["delete"]
    if todo == 0:
        print("nothing to delete: everything the spec created is already gone")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("not a terminal: review the plan above, then run again with --yes")
        if input(f"delete these {todo} resources? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1

    def progress(i: int, n: int, step: Any) -> None:
        print(f"[{i}/{n}] delete {step.resource.kind} {step.resource.name}", flush=True)

    with azure_errors():
        result = apply_cleanup(the_plan, clients, web=web, on_step=progress)
    print(f"{result.summary()}; a second destroy will find nothing to delete")
    return 0


def add_destroy_parser(prov: Any) -> None:
    """Register ``provision destroy`` under the ``provision`` subcommands."""
    p = azure_target_args(
        prov.add_parser(
            "destroy",
            help="remove what apply and function deploy created (plan; --apply to delete)",
        )
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="plan without credentials or network (assume everything exists), with a dry run",
    )
    p.add_argument("--json", metavar="FILE", help="also write the plan (and dry-run requests)")
    p.add_argument("--apply", action="store_true", help="delete after showing the plan")
    p.add_argument("--yes", action="store_true", help="with --apply: delete without asking")
    p.set_defaults(func=cmd_provision_destroy)
