"""Notebooks 00 to 02: check the environment, sign in or start local mode, provision, deploy.

Each function is one notebook cell: it does one step for a :class:`~.target.Target` and
returns a :class:`~.shown.Shown` describing what it found or did. In Azure mode the steps call
the same library code as the CLI (``provision plan|apply``, ``function build|deploy``); in
local mode the emulated gateway stands in for APIM and the local consumer for the function,
and every plan is still computed — offline, against an in-memory ARM — so an engineer sees
exactly what Azure would receive.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import httpx
import pandas as pd

from aoai_helpers.azure.functions.build import installed_version
from aoai_helpers.clouds import CLOUDS
from aoai_helpers.config import secret_from_env
from aoai_helpers.core.masking import mask
from aoai_helpers.core.tokens import verify_tokenizer_files
from aoai_helpers.db.engine import engine_from_url, masked_url
from aoai_helpers.notebook_steps.shown import Shown
from aoai_helpers.notebook_steps.target import Target, masked_keys

__all__ = [
    "apply_apim",
    "build_function",
    "check_environment",
    "choose_cloud",
    "deploy_function",
    "plan_apim",
    "plan_function",
    "start",
]

_COMMON = ("sqlalchemy", "tiktoken", "pydantic", "pandas", "plotly", "openpyxl", "openai")
_AZURE = (
    "azure-identity",
    "azure-mgmt-apimanagement",
    "azure-mgmt-eventhub",
    "azure-mgmt-web",
    "azure-eventhub",
)
_LOCAL = ("uvicorn", "httpx")
_LISTEN = "AOAI_EVENTHUB_LISTEN_CONNECTION"


def check_environment(target: Target) -> Shown:
    """Python, the packages the mode needs, the offline tokenizer files, the database."""
    rows: list[dict[str, str]] = []
    failed = False

    def check(what: str, ok: bool, detail: str, required: bool = True) -> None:
        nonlocal failed
        failed = failed or (required and not ok)
        rows.append(
            {
                "check": what,
                "result": "ok" if ok else ("MISSING" if required else "-"),
                "detail": detail,
            }
        )

    v = sys.version_info
    check("Python ≥ 3.11", v >= (3, 11), f"{v.major}.{v.minor}.{v.micro}")
    wanted = _COMMON + (_AZURE if target.mode == "azure" else _LOCAL)
    for name in wanted:
        found = installed_version(name)
        check(
            name, found is not None, found or "pip install 'apim-aoai-proxy[local,azure,notebooks]'"
        )
    try:
        files = verify_tokenizer_files()
        check("tokenizer files (offline)", True, ", ".join(f"{k} sha256 ok" for k in sorted(files)))
    except Exception as exc:  # a broken install: shown, and the step fails
        check("tokenizer files (offline)", False, str(exc))
    try:
        engine = engine_from_url(target.db_url)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
        check("database reachable", True, masked_url(target.db_url))
    except Exception as exc:
        check("database reachable", False, f"{masked_url(target.db_url)}: {type(exc).__name__}")
    if target.mode == "azure":
        az = shutil.which("az")
        check(
            "Azure CLI (for credential=cli)",
            az is not None,
            az or "not found",
            required=target.credential == "cli",
        )
    return Shown(
        "environment ready" if not failed else "environment incomplete: install what is MISSING",
        "fail" if failed else "ok",
        tables=[("", pd.DataFrame(rows))],
    )


def choose_cloud(target: Target) -> Shown:
    """The clouds this toolkit knows, the spec's marked; endpoints the next steps will use."""
    rows = [
        {
            "": "→" if c.name == target.spec.cloud else "",
            "cloud": c.name,
            "sign-in": c.authority_host,
            "ARM": c.arm_endpoint,
            "APIM gateway": f"{target.spec.apim.service_name}.{c.apim_gateway_suffix}",
            "Azure OpenAI": f"*.{target.spec.for_cloud(c.name).aoai_suffix()}",
            "Event Hubs": f"*.{c.eventhub_suffix}",
        }
        for c in CLOUDS.values()
    ]
    return Shown(
        f"cloud: {target.spec.cloud}",
        "info",
        [
            "set `cloud:` in the spec (or the `cloud` parameter) to AzureChinaCloud for Azure "
            "China (21Vianet) or AzureUSGovernment for US Gov",
        ],
        tables=[("", pd.DataFrame(rows))],
    )


def start(target: Target) -> Shown:
    """Local mode: start the local stack (or find it running). Azure mode: sign in."""
    if target.mode == "local":
        return _start_local(target)
    return _sign_in(target)


def _start_local(target: Target) -> Shown:
    from aoai_helpers.local.control import status, up

    current = status(target.spec, str(target.state_dir))
    reused = current.alive and current.info is not None
    info = (
        current.info
        if reused and current.info
        else up(
            target.spec,
            spec_path=str(target.spec_path),
            db_url=target.db_url,
            state_dir=str(target.state_dir),
        )
    )
    keys = masked_keys(dict(info.keys))
    table = pd.DataFrame(
        [
            {"subscription": s.id, "business unit": s.business_unit, "key": keys[s.id]}
            for s in target.spec.subscriptions
        ]
    )
    return Shown(
        ("local stack already running" if reused else "local stack started") + f" (pid {info.pid})",
        "ok",
        [
            f"gateway (stands in for APIM): {info.gateway_url}",
            f"AOAI simulator: {info.simulator_url}",
            f"capture of streamed calls: {info.capture}",
            f"event log (stands in for Event Hubs): {info.event_log}",
            f"database: {masked_url(info.database_url)}",
            "stop it with notebook 99 or: python -m aoai_helpers local down",
        ],
        tables=[("BU subscription keys (masked)", table)],
        data=info,
    )


def _sign_in(target: Target) -> Shown:
    import base64
    import json
    from datetime import UTC, datetime

    cloud = target.cloud
    token = target.azure_credential().get_token(cloud.arm_scope)
    claims: dict[str, Any] = {}
    try:  # the token's claims (tenant, who), never the token itself
        payload = token.token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        pass
    who = claims.get("upn") or claims.get("unique_name") or claims.get("appid") or "(unknown)"
    expires = datetime.fromtimestamp(token.expires_on, UTC).strftime("%H:%M UTC")
    return Shown(
        f"signed in to {cloud.name}",
        lines=[
            f"as {who} in tenant {claims.get('tid', '(unknown)')} ({target.credential} credential)",
            f"ARM: {cloud.arm_endpoint}; token valid until {expires}",
            f"Azure subscription: {target.spec.subscription_id or '(missing in the spec!)'}",
        ],
        status="ok" if target.spec.subscription_id else "warn",
    )


def _clients(target: Target) -> Any:
    from aoai_helpers.azure.apim.provision import make_clients

    return make_clients(target.spec, *target.arm())


def plan_apim(target: Target) -> Shown:
    """The ordered create/update/no-op steps for the Event Hub, logger, API, named values,
    product, policies and BU subscriptions (local mode: the offline plan, dry-run through the
    real SDK against an in-memory ARM)."""
    from aoai_helpers.azure.apim.provision import dry_run, plan

    if target.mode == "local":
        the_plan = plan(target.spec)
        requests = dry_run(the_plan)
        lines = [
            f"offline: {len(requests)} SDK requests recorded against an in-memory ARM, none sent",
            "local mode: the emulated gateway already serves this spec (next cell)",
        ]
    else:
        the_plan = plan(target.spec, clients=_clients(target))
        lines = []
    counts = the_plan.counts()
    return Shown(
        f"plan: {counts['create']} to create, {counts['update']} to update, {counts['noop']} unchanged",
        "info",
        [*lines, *the_plan.render().splitlines()],
        data=the_plan,
    )


def apply_apim(target: Target) -> Shown:
    """Azure: apply the plan and write each BU's key (0600). Local: check the emulated gateway
    answers every BU key and refuses a wrong one, as APIM would."""
    if target.mode == "azure":
        from aoai_helpers.azure.apim.provision import apply, plan

        clients = _clients(target)
        the_plan = plan(target.spec, clients=clients)
        target.state_dir.mkdir(parents=True, exist_ok=True)
        done = apply(the_plan, clients, keys_out=target.keys_file)
        keys = target.subscription_keys()
        lines = [
            f"{len(done.done)} change(s) applied; BU keys written to {target.keys_file} (0600)"
        ]
    else:
        keys = target.subscription_keys()
        lines = ["local mode: nothing to send; the emulated gateway reads the same spec"]
    gateway = target.gateway_url()
    rows = []
    with httpx.Client(timeout=30) as http:
        # An unknown key must be refused before anything reaches the backend.
        wrong = http.post(
            f"{gateway}/openai/deployments/none/chat/completions",
            headers={"api-key": "wrong-key"},
            json={},
        )
        for sub in target.spec.subscriptions:
            limit = sub.token_limit
            rows.append(
                {
                    "subscription": sub.id,
                    "business unit": sub.business_unit,
                    "cost centre": sub.cost_center or "-",
                    "token limit / min": getattr(limit, "tokens_per_minute", None)
                    if limit
                    else "-",
                    "monthly budget": sub.monthly_budget if sub.monthly_budget is not None else "-",
                    "key": mask(keys.get(sub.id, "")),
                }
            )
    ok = wrong.status_code == 401 and all(sub.id in keys for sub in target.spec.subscriptions)
    lines.append(f"gateway {gateway}: a wrong key gets {wrong.status_code} (expected 401)")
    return Shown(
        "gateway ready for every business unit" if ok else "gateway check failed",
        "ok" if ok else "fail",
        lines,
        tables=[
            (
                f"product {target.spec.product.display_name}: one subscription per BU",
                pd.DataFrame(rows),
            )
        ],
    )


def build_function(target: Target) -> Shown:
    """Build the ingestion function's zip (reproducible: same sources, same bytes)."""
    from aoai_helpers.azure.functions.build import build_zip

    fn = target.spec.function
    built = build_zip(target.out_dir / "function", max_batch_size=fn.max_batch_size if fn else None)
    return Shown(
        f"function package built: {built.path}",
        "ok",
        [
            f"{built.size_bytes / 1e6:.2f} MB, {len(built.files)} files, sha256 {built.sha256[:16]}…",
            "includes the tokenizer files, so the function never downloads them",
        ],
        data=built,
    )


def plan_function(target: Target) -> Shown:
    """The app settings the function needs, compared with the app's (local: the consumer)."""
    spec = target.spec
    if target.mode == "local":
        return Shown(
            "local mode: the stack's consumer plays the function",
            "info",
            [
                f"it reads the event log (consumer group {spec.event_hub.consumer_group}), ingests "
                "each batch in one transaction and then checkpoints — the function's code path",
                f"into {masked_url(target.db_url)}",
                "in Azure mode this cell shows the function app's settings, added/changed/same",
            ],
        )
    from aoai_helpers.azure.functions.deploy import make_web_clients, plan_deploy

    clients = make_web_clients(spec, *target.arm())
    zip_path = target.out_dir / "function"
    the_plan = plan_deploy(
        spec, clients=clients, db_url=target.db_url, eventhub_connection=secret_from_env(_LISTEN)
    )
    return Shown(
        "deployment plan",
        "info",
        [*the_plan.render().splitlines(), f"package from {zip_path}"],
        data=the_plan,
    )


def deploy_function(target: Target) -> Shown:
    """Azure: set the app settings, zip-deploy and check the function is indexed.
    Local: show the consumer at work (events logged, checkpoint, rows stored)."""
    if target.mode == "azure":
        return _deploy_azure(target)
    from aoai_helpers.local.control import status

    st = status(target.spec, str(target.state_dir))
    alive = st.alive and st.gateway_up
    return Shown(
        "local consumer running" if alive else "local stack is not running: run notebook 00",
        "ok" if alive else "fail",
        [
            f"{st.events} event(s) in the local event log, checkpoint at {st.checkpoint}",
            "every event up to the checkpoint is stored (store, then checkpoint: at-least-once, "
            "deduplicated on RequestId)",
        ],
    )


def _deploy_azure(target: Target) -> Shown:
    from aoai_helpers.azure.functions.build import build_zip
    from aoai_helpers.azure.functions.deploy import deploy, make_web_clients, plan_deploy

    spec = target.spec
    cloud, subscription, cred, transport = target.arm()
    clients = make_web_clients(spec, cloud, subscription, cred, transport)
    fn = spec.function
    built = build_zip(target.out_dir / "function", max_batch_size=fn.max_batch_size if fn else None)
    the_plan = plan_deploy(
        spec,
        clients=clients,
        db_url=target.db_url,
        eventhub_connection=secret_from_env(_LISTEN),
        zip_path=built.path,
        zip_sha256=built.sha256,
    )
    progress: list[str] = []
    result = deploy(the_plan, clients, credential=cred, on_progress=progress.append)
    return Shown(
        "function deployed and indexed",
        "ok",
        [*progress, f"functions: {', '.join(result.functions)}"],
        data=result,
    )
