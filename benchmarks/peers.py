"""Peers measured beside this project's gateway, in the same run (``make bench-peers``).

LiteLLM's proxy — the open-source AI gateway most often used for per-team spend tracking — is
installed into a virtualenv of its own (``bench-results/.peers/litellm``, never into the
project's), pinned to :data:`LITELLM`, and started on loopback in front of the same AOAI
simulator, with one Azure deployment pointing at it. A custom callback (LiteLLM's documented
``CustomLogger`` hook, loaded from the config) writes what LiteLLM records for each call — its
usage and ``response_cost`` — to a JSON-lines file, which is what its spend tracking bills.

The pin: LiteLLM's 1.107.0 release on PyPI was compromised and pulled, so an exact version is
installed, never "the latest"; 1.106.12 is the last release before it (from 1.108 on, the
``proxy`` extra needs a ``litellm-proxy`` package the index here does not have).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx

__all__ = ["LITELLM", "MASTER_KEY", "litellm_proxy", "spend_records"]

LITELLM: Final = "litellm[proxy]==1.106.12"
#: The proxy's key (it refuses to start without one); clients send it as a bearer token.
MASTER_KEY: Final = "sk-bench-litellm-0000000000000000"
_CALLBACK: Final = '''
import json, os
from litellm.integrations.custom_logger import CustomLogger


class SpendProbe(CustomLogger):
    """Writes what LiteLLM records for each successful call (its usage and response_cost)."""

    def _write(self, kwargs, response_obj):
        usage = getattr(response_obj, "usage", None)
        record = {
            "stream": bool(kwargs.get("stream")),
            "prompt_tokens": getattr(usage, "prompt_tokens", None),
            "completion_tokens": getattr(usage, "completion_tokens", None),
            "response_cost": kwargs.get("response_cost"),
        }
        with open(os.environ["SPEND_PROBE_FILE"], "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\\n")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write(kwargs, response_obj)


probe = SpendProbe()
'''


def _venv(root: Path) -> Path:
    """The peer virtualenv's python, created and filled on first use."""
    venv = root / "litellm"
    python = venv / "bin" / "python"
    marker = venv / f".installed-{LITELLM}"
    if not marker.exists():
        print(f"peers: installing {LITELLM} into {venv} (once) …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                LITELLM,
            ],
            check=True,
        )
        marker.touch()
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def litellm_proxy(
    root: Path, simulator_url: str, backend_key: str, api_version: str
) -> Iterator[tuple[str, Path]]:
    """A running LiteLLM proxy in front of ``simulator_url``: (its base URL, its spend file)."""
    python = _venv(root)
    work = root / "litellm-run"
    work.mkdir(parents=True, exist_ok=True)
    (work / "spend_probe.py").write_text(textwrap.dedent(_CALLBACK), "utf-8")
    spend = work / "spend.jsonl"
    spend.unlink(missing_ok=True)
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o",
                "litellm_params": {
                    "model": "azure/gpt-4o",
                    "api_base": simulator_url,
                    "api_key": backend_key,
                    "api_version": api_version,
                },
            }
        ],
        "litellm_settings": {"callbacks": "spend_probe.probe", "telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }
    (work / "config.yaml").write_text(json.dumps(config), "utf-8")  # JSON is YAML
    port = _free_port()
    env = {
        **os.environ,
        "SPEND_PROBE_FILE": str(spend),
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled price map: no download
        "PYTHONPATH": str(work),
    }
    proc = subprocess.Popen(
        [
            str(python.parent / "litellm"),  # the proxy's console script
            *("--config", str(work / "config.yaml")),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "proxy.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the LiteLLM proxy exited ({proc.returncode}); see {work / 'proxy.log'}"
                )
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the LiteLLM proxy did not start; see {work / 'proxy.log'}")
            time.sleep(0.2)
        yield url, spend
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spend_records(spend: Path, expected: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The callback's records, once it has written ``expected`` of them (it runs after the
    response, asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = spend.read_text("utf-8").splitlines() if spend.exists() else []
        if len(lines) >= expected or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)
