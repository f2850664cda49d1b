"""``python -m aoai_helpers …`` in a subprocess, as a user runs it (shared by the CLI tests).

The child gets the test process's environment without any ``AOAI_*`` / ``AZURE_*`` variable
(nothing from the developer's shell leaks in) but those of :data:`KEPT_VARIABLES`, plus
``extra``, and imports this checkout. What
it printed is handed to the suite-wide secrets scan.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from secrets_registry import record_output

__all__ = ["KEPT_VARIABLES", "ROOT", "clean_env", "run_cli"]

ROOT = Path(__file__).resolve().parent.parent
#: The one AOAI_* variable a test run passes on: the business clock (``make test-stress``
#: runs the suite at the first minutes of a month with it).
KEPT_VARIABLES = frozenset({"AOAI_NOW"})


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI child process (see the module docstring)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k in KEPT_VARIABLES or not k.startswith(("AOAI_", "AZURE_"))
    }
    return {**base, "PYTHONPATH": str(ROOT), **(extra or {})}


def run_cli(
    *argv: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``argv``; return the finished process (output captured as text)."""
    done = subprocess.run(
        [sys.executable, "-m", "aoai_helpers", *argv],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    record_output(f"cli {' '.join(argv[:2])}", done.stdout + done.stderr)
    return done
