"""``local up|down|status|serve``: the local stack as a background process.

``up`` starts ``python -m aoai_helpers local serve …`` detached (its own session, output in
``<state_dir>/stack.log``), waits until it has written ``stack.json`` and returns its
:class:`~aoai_helpers.local.stack.StackInfo`. ``serve`` runs the stack in the foreground until
SIGINT/SIGTERM, then stops it gracefully (in-flight events logged, stored and checkpointed).
``down`` sends SIGTERM and waits. ``status`` reads ``stack.json`` and checks the process and
its ports. Keys are only ever shown masked (``****last4``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.stack import STATE_FILE, LocalStack, StackInfo
from aoai_helpers.spec import CaptureMode, Spec

__all__ = ["StackStatus", "down", "read_state", "serve", "status", "up"]

_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 60.0


def read_state(state_dir: str | os.PathLike[str]) -> StackInfo | None:
    """The running stack's ``stack.json``, or ``None`` if there is none."""
    path = Path(state_dir) / STATE_FILE
    try:
        return StackInfo.from_dict(orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); remove it and run local up") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(url: str) -> bool:
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class StackStatus:
    info: StackInfo | None
    alive: bool
    gateway_up: bool
    simulator_up: bool
    events: int
    checkpoint: int


def status(spec: Spec, state_dir: str | None = None) -> StackStatus:
    """What is running (from ``stack.json``), and how far the consumer has got."""
    from aoai_helpers.eventlog.eventhub import LocalEventLog

    directory = Path(state_dir or spec.local.state_dir)
    info = read_state(directory)
    log = LocalEventLog(directory / "events")
    events, checkpoint = (
        log.last_sequence_number() + 1,
        log.checkpoint_of(spec.event_hub.consumer_group),
    )
    if info is None:
        return StackStatus(None, False, False, False, events, checkpoint)
    alive = _alive(info.pid)
    return StackStatus(
        info,
        alive,
        alive and _listening(info.gateway_url),
        alive and _listening(info.simulator_url),
        events,
        checkpoint,
    )


def serve(
    spec: Spec,
    *,
    spec_path: str | None = None,
    db_url: str | None = None,
    capture: CaptureMode | None = None,
    state_dir: str | None = None,
    ready: threading.Event | None = None,
) -> StackInfo:
    """Run the stack in this process until SIGINT/SIGTERM; returns the info it served."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    stack = LocalStack(spec, db_url=db_url, capture=capture, state_dir=state_dir)
    try:
        info = stack.start()
        print(
            f"local stack running (pid {info.pid}); stop with: python -m aoai_helpers local down",
            flush=True,
        )
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            if stack.consumer_error is not None:
                raise stack.consumer_error
        return info
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    spec: Spec,
    *,
    spec_path: str | None,
    db_url: str | None = None,
    capture: CaptureMode | None = None,
    state_dir: str | None = None,
) -> StackInfo:
    """Start the stack in the background and wait until it is ready."""
    directory = Path(state_dir or spec.local.state_dir)
    running = read_state(directory)
    if running is not None and _alive(running.pid):
        raise ConfigError(
            f"a local stack is already running (pid {running.pid}, gateway {running.gateway_url}); "
            "run: python -m aoai_helpers local down"
        )
    directory.mkdir(parents=True, exist_ok=True)
    _ignore_in_git(directory)
    (directory / STATE_FILE).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "aoai_helpers", "local", "serve", "--state-dir", str(directory)]
    if spec_path:
        cmd += ["--spec", spec_path]
    if db_url:
        cmd += ["--db", db_url]
    if capture:
        cmd += ["--capture", capture]
    log_path = directory / "stack.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        info = read_state(directory)
        if info is not None and info.pid == proc.pid:
            return info
        if proc.poll() is not None:
            tail = log_path.read_text("utf-8", errors="replace").strip().splitlines()[-1:]
            raise ConfigError(
                f"the local stack failed to start: {' '.join(tail) or 'no output'} (log: {log_path})"
            )
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    raise ConfigError(
        f"the local stack did not start within {_START_TIMEOUT:.0f} s (log: {log_path})"
    )


def down(spec: Spec, state_dir: str | None = None) -> StackInfo | None:
    """Stop the background stack (SIGTERM, then wait); ``None`` if none was running."""
    directory = Path(state_dir or spec.local.state_dir)
    info = read_state(directory)
    if info is None:
        return None
    if not _alive(info.pid):
        (directory / STATE_FILE).unlink(missing_ok=True)
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _alive(info.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(info.pid):
        raise ConfigError(
            f"the local stack (pid {info.pid}) did not stop within {_STOP_TIMEOUT:.0f} s"
        )
    (directory / STATE_FILE).unlink(missing_ok=True)
    return info


def _ignore_in_git(directory: Path) -> None:
    """Keep the state directory (keys, events) out of git wherever it is."""
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# local-mode state: keys and events, never commit\n*\n", "utf-8")
