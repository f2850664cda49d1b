"""The live half of ``make demo``: traffic from every BU through the local gateway, both capture modes.

Starts a throwaway :class:`~aoai_helpers.local.stack.LocalStack` (its own temporary state
directory and free ports, so it never collides with a stack started by ``local up``) in
pass-through mode, then in buffered-capture mode, drives :func:`drive_traffic` through each
with the real ``openai`` SDK, makes one call with a wrong key (rejected, never stored), and waits
until the consumer has stored every event.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

from ..exceptions import AoaiHelpersError
from ..spec import CaptureMode, Spec
from .stack import LocalStack
from .traffic import CallResult, azure_client, drive_traffic

__all__ = ["LiveDemoResult", "run_live_demo"]


@dataclass
class LiveDemoResult:
    """What the live demo did: calls per capture mode, rejected calls, events stored."""

    calls: dict[str, list[CallResult]] = field(default_factory=dict)
    rejected: int = 0
    stored: int = 0
    events: int = 0


def run_live_demo(
    db_url: str,
    spec: Spec,
    *,
    rounds: int = 1,
    modes: tuple[CaptureMode, ...] = ("passthrough", "buffered"),
    progress: Callable[[str], None] | None = None,
) -> LiveDemoResult:
    """Drive ``rounds`` rounds of mixed traffic per BU through the gateway in each capture mode."""
    result = LiveDemoResult()
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="aoai-local-") as state:
            stack = LocalStack(
                spec, db_url=db_url, capture=mode, state_dir=state, write_state=False
            )
            info = stack.start()
            try:
                if progress:
                    progress(
                        f"local stack ({mode}): gateway {info.gateway_url}, simulator {info.simulator_url}"
                    )
                result.calls[mode] = drive_traffic(info, spec, rounds=rounds)
                wrong = azure_client(info, "not-a-subscription-key")
                try:
                    wrong.chat.completions.create(
                        model=next(iter(spec.deployment_models())),
                        messages=[{"role": "user", "content": "hello"}],
                    )
                except openai.AuthenticationError:
                    result.rejected += 1
                finally:
                    wrong.close()
                if not stack.wait_ingested(timeout=60):
                    raise AoaiHelpersError(
                        "the local consumer did not store every event within 60 s"
                    )
                stats = stack.event_log.last_sequence_number() + 1
                result.events += stats
            finally:
                stack.stop()
            if stack.consumed is not None:
                result.stored += stack.consumed.result.stored
    return result
