"""Notebook 99: remove what notebooks 01 and 02 created — the plan first, then apply.

Azure mode uses :mod:`aoai_helpers.azure.apim.cleanup` (BU subscriptions, product, API, policies,
named values, logger, the function's own app settings, and the Event Hub only if provisioning
created it), exactly as ``provision destroy`` does. Local mode stops the local stack; its state
directory (keys, event log) is removed only when asked. The database is never touched.
"""

from __future__ import annotations

import shutil
from typing import Any

import pandas as pd

from aoai_helpers.notebook_steps.shown import Shown
from aoai_helpers.notebook_steps.target import Target

__all__ = ["apply_clean_up", "plan_clean_up"]


def _azure_clients(target: Target) -> tuple[Any, Any]:
    from aoai_helpers.azure.apim.cleanup import make_cleanup_clients

    return make_cleanup_clients(target.spec, *target.arm())


def plan_clean_up(target: Target) -> Shown:
    """What clean-up would remove and keep (local mode: the Azure plan as a dry run, too)."""
    from aoai_helpers.azure.apim.cleanup import cleanup_dry_run, plan_cleanup

    if target.mode == "local":
        from aoai_helpers.local.control import status

        dry = cleanup_dry_run(target.spec)
        st = status(target.spec, str(target.state_dir))
        running = st.info is not None and st.alive
        return Shown(
            "local mode: stop the local stack"
            + (f" (pid {st.info.pid})" if running and st.info else " (not running)"),
            "info",
            [
                f"kept: the database, and {target.state_dir} (keys, event log) unless remove_state",
                f"in Azure mode the plan would send {len(dry.requests)} requests (dry run below, nothing sent)",
                *dry.plan.render().splitlines(),
            ],
            data=dry.plan,
        )
    clients, web = _azure_clients(target)
    the_plan = plan_cleanup(target.spec, clients=clients, web=web)
    return Shown("clean-up plan", "info", the_plan.render().splitlines(), data=the_plan)


def apply_clean_up(target: Target, *, remove_state: bool = False) -> Shown:
    """Azure: delete as planned (idempotent; already gone counts as done). Local: stop the stack."""
    if target.mode == "local":
        from aoai_helpers.local.control import down

        stopped = down(target.spec, str(target.state_dir))
        lines = [
            f"stopped the local stack (pid {stopped.pid})"
            if stopped
            else "no local stack was running",
            "the database is kept",
        ]
        if remove_state and target.state_dir.exists():
            shutil.rmtree(target.state_dir)
            lines.append(f"removed {target.state_dir} (keys, event log)")
        return Shown("local mode cleaned up", "ok", lines)
    from aoai_helpers.azure.apim.cleanup import apply_cleanup, plan_cleanup

    clients, web = _azure_clients(target)
    the_plan = plan_cleanup(target.spec, clients=clients, web=web)
    done: list[dict[str, str]] = []
    result = apply_cleanup(
        the_plan,
        clients,
        web=web,
        on_step=lambda i, n, step: done.append(
            {"step": f"{i}/{n}", "action": step.action, "resource": step.resource.name}
        ),
    )
    return Shown(result.summary(), "ok", tables=[("", pd.DataFrame(done))], data=result)
