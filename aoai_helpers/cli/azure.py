"""CLI commands that change Azure: ``provision plan|apply``, and what every command that talks
to Azure shares (``--spec/--cloud/--credential``, sign-in, one-line Azure errors).

Everything that changes Azure has a plan first: ``provision plan`` shows it (``--offline``:
without credentials or network, assuming nothing exists, with the exact requests a dry run of
the SDK calls sends) and exits 1 when the plan has errors (token limits on Consumption, a
retention the namespace tier cannot hold, no OpenAPI document to import); ``provision apply``
plans against what exists, shows the plan, refuses one with errors, asks for confirmation
(``--yes`` to skip; required when stdin is not a terminal), then applies.
Azure errors become one line: sign-in failures, HTTP status and ARM error code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aoai_helpers.cli._options import SPEC_HELP
from aoai_helpers.config import spec_path
from aoai_helpers.exceptions import AoaiHelpersError, ConfigError

if TYPE_CHECKING:
    from aoai_helpers.spec import Spec

__all__ = ["add_provision_parser", "azure_errors", "azure_target_args", "sign_in", "spec_from_args"]


class AzureError(AoaiHelpersError):
    """An Azure call failed (sign-in, permission, or a refused request)."""


@contextmanager
def azure_errors() -> Iterator[None]:
    """Turn azure-core / azure-identity exceptions into one-line :class:`AzureError`."""
    try:
        yield
    except ImportError as exc:
        raise ConfigError(
            f"{exc.name or 'an Azure SDK'} is not installed: pip install 'apim-aoai-proxy[azure]'"
        ) from None
    except Exception as exc:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        if isinstance(exc, ClientAuthenticationError):
            first = str(exc.message or exc).strip().splitlines()[0]
            raise AzureError(f"sign-in failed: {first}") from None
        if isinstance(exc, HttpResponseError):
            code = getattr(exc.error, "code", None) if exc.error else None
            first = str(exc.message or "").strip().splitlines()[0] if exc.message else ""
            raise AzureError(
                f"Azure refused the request (HTTP {exc.status_code}{', ' + code if code else ''}): {first}"
            ) from None
        raise


def spec_from_args(args: argparse.Namespace) -> Spec:
    """The spec named by ``--spec`` (or found by :func:`~aoai_helpers.config.spec_path`), on the
    ``--cloud`` when one is given."""
    from aoai_helpers.spec import load_spec

    return load_spec(spec_path(args.spec)).for_cloud(getattr(args, "cloud", None))


def sign_in(spec: Spec, args: argparse.Namespace) -> tuple[Any, str, Any]:
    """The cloud (``--cloud`` or the spec's), the spec's Azure subscription and a credential
    (``--credential``) for a command that changes Azure; ``ConfigError`` without a subscription."""
    from aoai_helpers.auth import credential
    from aoai_helpers.clouds import get_cloud

    cloud = get_cloud(args.cloud or spec.cloud)
    if not spec.subscription_id:
        raise ConfigError(
            "the spec has no subscription_id (the Azure subscription of its resources)"
        )
    return cloud, spec.subscription_id, credential(cloud, args.credential)


def _clients(spec: Spec, args: argparse.Namespace) -> Any:
    from aoai_helpers.azure.apim.provision import make_clients

    return make_clients(spec, *sign_in(spec, args))


def cmd_provision_plan(args: argparse.Namespace) -> int:
    from aoai_helpers.azure.apim.provision import dry_run, plan

    spec = spec_from_args(args)
    if args.offline:
        the_plan = plan(spec, cloud=args.cloud)
        print(the_plan.render())
        with azure_errors():
            requests = dry_run(the_plan)
        hosts = sorted({r.host for r in requests})
        print(
            f"\ndry run of the SDK calls: {len(requests)} requests, all to {', '.join(hosts)} "
            "(recorded in memory; nothing was sent)"
        )
        recorded = [{"method": r.method, "url": r.url} for r in requests]
    else:
        with azure_errors():
            the_plan = plan(spec, clients=_clients(spec, args), cloud=args.cloud)
        print(the_plan.render())
        recorded = []
    if args.json:
        data = the_plan.to_dict()
        data["dry_run_requests"] = recorded
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", "utf-8")
        print(f"plan written to {args.json} (secrets masked)")
    if the_plan.errors():  # listed in the plan above; apply would refuse it
        print(f"the plan has {len(the_plan.errors())} error(s): apply refuses it", file=sys.stderr)
        return 1
    return 0


def cmd_provision_apply(args: argparse.Namespace) -> int:
    from aoai_helpers.azure.apim.provision import apply, plan

    spec = spec_from_args(args)
    with azure_errors():
        clients = _clients(spec, args)
        the_plan = plan(spec, clients=clients, cloud=args.cloud)
    print(the_plan.render())
    if the_plan.errors():
        raise ConfigError("the plan has errors (above): nothing was changed")
    counts = the_plan.counts()
    if counts["create"] + counts["update"] == 0 and not the_plan.retired:
        print("nothing to do: Azure already matches the spec")
        if args.keys_out:
            _write_keys(clients, spec, args.keys_out)
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("not a terminal: review the plan above, then run again with --yes")
        if input("apply these changes? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1

    def progress(i: int, n: int, step: Any) -> None:
        print(f"[{i}/{n}] {step.action} {step.resource.kind} {step.resource.name}", flush=True)

    with azure_errors():
        apply(the_plan, clients, on_step=progress)
        if args.keys_out:
            _write_keys(clients, spec, args.keys_out)
    print("applied; a second apply will find nothing to do")
    return 0


def _write_keys(clients: Any, spec: Spec, path: str) -> None:
    from aoai_helpers.azure.apim.provision import write_keys
    from aoai_helpers.core.masking import mask

    with azure_errors():
        written = write_keys(clients, spec, Path(path))
    data = json.loads(written.read_text("utf-8"))
    print(f"BU subscription keys written to {written} (mode 0600):")
    for sid, entry in data["subscriptions"].items():
        print(f"  {sid:<24} {entry['business_unit']:<20} {mask(entry['primary_key'])}")


def azure_target_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--spec``, ``--cloud`` and ``--credential``: what every command that talks to Azure takes."""
    p.add_argument("--spec", metavar="FILE", help=SPEC_HELP)
    p.add_argument(
        "--cloud",
        choices=["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"],
        help="override the spec's cloud",
    )
    p.add_argument(
        "--credential",
        choices=["default", "cli", "device-code"],
        default="default",
        help="how to sign in (default: DefaultAzureCredential)",
    )
    return p


def add_provision_parser(sub: Any) -> Any:
    """Register ``provision plan|apply``; return the ``provision`` actions, on which
    :func:`aoai_helpers.cli.cleanup.add_destroy_parser` registers ``destroy``."""
    prov = sub.add_parser(
        "provision", help="APIM: plan and apply the spec on Azure"
    ).add_subparsers(dest="provision_command", required=True, metavar="ACTION")

    p = azure_target_args(prov.add_parser("plan", help="show what apply would change"))
    p.add_argument(
        "--offline", action="store_true", help="assume nothing exists: no credentials, no network"
    )
    p.add_argument(
        "--json", metavar="FILE", help="also write the plan with request bodies (secrets masked)"
    )
    p.set_defaults(func=cmd_provision_plan)
    p = azure_target_args(prov.add_parser("apply", help="plan, confirm, apply"))
    p.add_argument("--yes", action="store_true", help="apply without asking")
    p.add_argument(
        "--keys-out", metavar="FILE", help="write the BU subscription keys to FILE (mode 0600)"
    )
    p.set_defaults(func=cmd_provision_apply)
    return prov
