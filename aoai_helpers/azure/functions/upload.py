"""The package's upload to the app's SCM site, and the wait for its deployment to finish.

Two ways, by hosting plan (:mod:`.hosting`):

- **Kudu zip deploy** (Linux Consumption, Elastic Premium, Dedicated): ``POST
  <scm>/api/zipdeploy?isAsync=true``, ``202`` and a ``Location`` to poll until ``complete``;
  status ``4`` is success, ``3`` failure (*Zip deployment for Azure Functions*).
- **One Deploy** (Flex Consumption, which "doesn't support zip deployment"): ``POST
  <scm>/api/publish?RemoteBuild=…&Deployer=…``; the answer is the deployment's id, then ``GET
  <scm>/api/deployments/latest`` until it shows that id with a final status (4 success; -1
  cancelled, 3 failed, 5 conflict, 6 partially succeeded — Microsoft's answer in
  Azure/azure-dev#3658; the endpoint and parameters as the Azure CLI's Flex deployment sends
  them). When the answer is not a bare id (empty, JSON), there is no id to wait for: the
  first final status seen after the upload is taken, and the progress says so.

Both send ``Authorization: Bearer <ARM token>``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from aoai_helpers.exceptions import AoaiHelpersError

__all__ = [
    "KUDU_FAILED",
    "KUDU_SUCCESS",
    "DeployError",
    "deployment_id",
    "one_deploy",
    "zip_deploy",
]

KUDU_SUCCESS: Final = 4
KUDU_FAILED: Final = 3
#: One Deploy's final statuses other than success (azure-dev #3658: -1 Cancelled, 3 Failed,
#: 5 Conflict, 6 PartialSuccess); 0 Pending, 1 Building, 2 Deploying are in progress.
_FLEX_FAILED: Final = {-1: "cancelled", 3: "failed", 5: "conflict", 6: "partially succeeded"}


class DeployError(AoaiHelpersError):
    """The deployment failed or was refused (Kudu / One Deploy reported a failure, timed out,
    the function is not indexed, or the plan has a problem)."""


def _request(
    url: str, token: str, *, data: bytes | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/zip")
        req.add_header("Cache-Control", "no-cache")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DeployError(
            f"cannot reach {url.split('?')[0]}: {getattr(exc, 'reason', exc)}"
        ) from None


def _upload(
    url: str, token: str, zip_path: Path, say: Callable[[str], None]
) -> tuple[int, dict[str, str], bytes]:
    data = zip_path.read_bytes()
    say(f"uploading {zip_path.name} ({len(data):,} bytes) to {url.split('?')[0]}")
    status, headers, body = _request(url, token, data=data, method="POST")
    if status in (401, 403):
        raise DeployError(
            f"the SCM endpoint refused the upload (HTTP {status}): the signed-in identity needs Contributor on the app"
        )
    return status, headers, body


def _json(body: bytes) -> dict[str, Any]:
    try:
        info = json.loads(body or b"{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _text(info: Mapping[str, Any]) -> str:
    return str(info.get("status_text") or info.get("statusText") or info.get("message") or "")


def _poll(
    url: str,
    token: str,
    done: Callable[[dict[str, Any]], bool],
    poll_interval: float,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """GET ``url`` until ``done(info)``; ``info`` is the last JSON answer."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = _request(url, token)
        if status in (200, 202):
            info = _json(body)
            if done(info):
                return info
            say(f"deployment in progress ({info.get('progress') or _text(info) or 'building'})")
        elif status >= 400 and status != 404:
            raise DeployError(f"polling the deployment failed (HTTP {status})")
        if time.monotonic() > deadline:
            raise DeployError(
                f"the deployment did not finish within {timeout:.0f} s (still polling {url})"
            )
        time.sleep(poll_interval)


def zip_deploy(
    url: str,
    base: str,
    token: str,
    zip_path: Path,
    poll_interval: float,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    status, headers, body = _upload(url, token, zip_path, say)
    if status != 202:
        raise DeployError(
            f"zip deploy was not accepted (HTTP {status}): {body[:200].decode('utf-8', 'replace')}"
        )
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    if not location:
        raise DeployError("zip deploy was accepted but gave no Location to poll")
    info = _poll(
        location,
        token,
        lambda i: bool(i.get("complete")) or i.get("status") in (KUDU_SUCCESS, KUDU_FAILED),
        poll_interval,
        timeout,
        say,
    )
    if info.get("status") == KUDU_SUCCESS:
        say("deployment succeeded")
        return info
    log = info.get("log_url") or f"{base}/api/deployments/{info.get('id', 'latest')}/log"
    raise DeployError(f"the deployment failed: {_text(info) or 'no reason given'} (log: {log})")


_BARE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def deployment_id(body: bytes) -> str | None:
    """The deployment id One Deploy answers (``d1f3…`` or a JSON string ``"d1f3…"``); None
    when the body is anything else (empty, a JSON object, text with spaces)."""
    text = body.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text if _BARE_ID.fullmatch(text) else None


def one_deploy(
    url: str,
    base: str,
    token: str,
    zip_path: Path,
    poll_interval: float,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    status, _, body = _upload(url, token, zip_path, say)
    if status == 409:
        raise DeployError(
            "One Deploy refused the upload (HTTP 409): another deployment may be in progress; "
            "try again when it has finished"
        )
    if status not in (200, 202):
        raise DeployError(
            f"One Deploy did not accept the package (HTTP {status}): "
            f"{body[:200].decode('utf-8', 'replace')}"
        )
    # the body is the deployment id: until /latest shows it, /latest is the previous deployment
    ours = deployment_id(body)
    if ours is None:
        shown = "an empty body" if not body.strip() else "a body that is not a bare deployment id"
        say(
            f"One Deploy answered HTTP {status} with {shown}: the first final status "
            "/api/deployments/latest shows after the upload is taken as this deployment's (it "
            "could be the previous deployment's if this one has not started yet)"
        )

    def done(info: dict[str, Any]) -> bool:
        if ours is not None and info.get("id") and str(info["id"]) != ours:
            return False
        code = info.get("status")
        return code == KUDU_SUCCESS or code in _FLEX_FAILED

    info = _poll(f"{base}/api/deployments/latest", token, done, poll_interval, timeout, say)
    code = info.get("status")
    if code == KUDU_SUCCESS:
        say("deployment succeeded")
        return info
    log = info.get("log_url") or f"{base}/api/deployments/{info.get('id', 'latest')}/log"
    what = _FLEX_FAILED.get(code if isinstance(code, int) else 3, "failed")
    raise DeployError(
        f"the deployment {what} (status {code}): {_text(info) or 'no reason given'} (log: {log})"
    )
