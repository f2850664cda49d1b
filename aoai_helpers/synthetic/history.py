"""Demo history: realistic mixed traffic for every BU over the days of a month, through the gateway.

``make demo`` and the notebooks need more than one afternoon of calls to show a daily trend,
a model mix and a budget burn. :func:`plan_history` decides, with a seeded RNG and no I/O,
which calls each business unit makes on each day (weekday/weekend and office-hours pattern,
a gentle month-on-month growth, a per-BU volume and model preference, the mix of chat,
streamed chat with and without usage, completions, embeddings and Responses calls).
:func:`drive_history` then makes every planned call with the real ``openai`` SDK through the
local gateway (simulator behind it, event log and consumer after it, all in this process),
with the gateway's clock set to the planned time, so each row lands on its day exactly as a
live call made then would have. Nothing bypasses the pipeline: the rows are what ingest
stored from the events the gateway logged, reconciled with the language-model log the gateway
wrote (pass-through streams end ``reconciled``, as on Azure).

For volume tests that do not need the gateway, see :mod:`aoai_helpers.synthetic.rows`.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from aoai_helpers.analysis.report import month_bounds
from aoai_helpers.exceptions import AoaiHelpersError, ConfigError
from aoai_helpers.local.stack import LocalStack
from aoai_helpers.pipeline.reconcile import ReconcileResult
from aoai_helpers.spec import Spec
from aoai_helpers.synthetic.traffic import (
    CALL_KINDS,
    CallResult,
    azure_client,
    chat_and_embedding_deployments,
    make_call,
    v1_client,
)

__all__ = ["HistoryResult", "PlannedCall", "SimulatedClock", "drive_history", "plan_history"]

#: Share of each kind of call in a BU's traffic (same order as CALL_KINDS).
KIND_WEIGHTS: Final[dict[str, float]] = {
    "chat": 0.34,
    "chat_stream_usage": 0.16,
    "chat_stream": 0.12,
    "completions": 0.05,
    "embeddings": 0.17,
    "responses": 0.10,
    "responses_stream": 0.06,
}
#: Relative call volume of the 1st, 2nd, 3rd… subscription in the spec (cycled).
BU_VOLUME: Final[tuple[float, ...]] = (1.0, 1.7, 2.6, 1.3, 0.8)
WEEKEND_FACTOR: Final = 0.2


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call :func:`drive_history` will make: when, by whom, what, on which deployment."""

    when: datetime
    subscription: str
    kind: str
    deployment: str


@dataclass
class HistoryResult:
    """What :func:`drive_history` did: the calls as clients saw them and the rows stored."""

    first_day: date
    last_day: date
    calls: list[CallResult] = field(default_factory=list)
    stored: int = 0
    events: int = 0
    reconciled: ReconcileResult | None = None

    @property
    def failed(self) -> int:
        """Calls the API answered with an error (still logged and stored, billed as served)."""
        return sum(1 for c in self.calls if c.status >= 400)


class SimulatedClock:
    """A settable clock for the gateway: returns the planned time of the call in flight."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def history_days(month: str, now: datetime) -> list[date]:
    """The days of ``month`` that have begun by ``now`` (all of them for a past month; [] for a
    future one)."""
    start, end = month_bounds(month)
    last = min(end.date() - timedelta(days=1), _naive_utc(now).date())
    return [start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1)]


def _naive_utc(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def plan_history(
    spec: Spec,
    month: str,
    *,
    now: datetime,
    calls_per_day: float = 5.0,
    seed: int = 11,
) -> list[PlannedCall]:
    """The calls every BU makes in ``month`` before ``now``, in time order.

    Nothing is planned at or after ``now``: on the 1st at 00:05 the current month has five
    minutes of calls at most (a past month has all of its days).

    ``calls_per_day`` is the weekday average of the least busy BU at the start of the month;
    other BUs make :data:`BU_VOLUME` times as many, weekends :data:`WEEKEND_FACTOR` as many,
    and volume grows by about 1 % a day. Pure: the same arguments give the same plan.
    """
    if calls_per_day <= 0:
        raise ConfigError(f"calls per day must be positive, not {calls_per_day}")
    rng = random.Random(seed)
    days = history_days(month, now)
    cutoff = _naive_utc(now).replace(tzinfo=UTC)
    chat, embed = chat_and_embedding_deployments(spec)
    kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
    plan: list[PlannedCall] = []
    for n, day in enumerate(days):
        weekend = day.weekday() >= 5
        for i, sub in enumerate(spec.subscriptions):
            # Each BU leans on one chat deployment (its "house" model) and uses the others too.
            house = chat[i % len(chat)]
            prefs = [4.0 if d == house else 1.0 for d in chat]
            mean = calls_per_day * BU_VOLUME[i % len(BU_VOLUME)] * (1 + 0.01 * n)
            mean *= WEEKEND_FACTOR if weekend else 1.0
            count = max(0, round(rng.gauss(mean, mean * 0.25)))
            for _ in range(count):
                hour = min(23, max(0, round(rng.gauss(13, 3))))
                when = datetime.combine(day, time(hour), UTC) + timedelta(
                    seconds=rng.randrange(3600), milliseconds=rng.randrange(1000)
                )
                kind = rng.choices(kinds, weights)[0]
                deployment = embed if kind == "embeddings" else rng.choices(chat, prefs)[0]
                if when < cutoff:  # drawn all the same, so the earlier calls do not change
                    plan.append(PlannedCall(when, sub.id, kind, deployment))
    plan.sort(key=lambda c: c.when)
    return plan


def _fast(spec: Spec) -> Spec:
    """The spec with an instant, fault-free simulator (history needs volume, not latency)."""
    return spec.with_simulator(ttft_ms=0.0, tokens_per_second=0.0, max_reply_tokens=480, faults=())


def _check_plan(spec: Spec, calls: Sequence[PlannedCall]) -> None:
    """Refuse an empty plan, unknown subscriptions and unknown call kinds (one line each)."""
    if not calls:
        raise ConfigError("no calls planned: the month has no calls before now")
    unknown = {c.subscription for c in calls} - {s.id for s in spec.subscriptions}
    if unknown:
        raise ConfigError(f"planned calls for unknown subscriptions: {', '.join(sorted(unknown))}")
    if any(c.kind not in CALL_KINDS for c in calls):
        raise ConfigError(f"planned call kinds must be among {', '.join(CALL_KINDS)}")


def drive_history(
    spec: Spec,
    db_url: str,
    calls: Sequence[PlannedCall],
    *,
    seed: int = 11,
    progress: Callable[[int, int], None] | None = None,
) -> HistoryResult:
    """Make every planned call through a throwaway local stack; wait until all are stored.

    The stack (own temporary state directory, free ports) writes to ``db_url``; its gateway's
    clock is set to each call's planned time. ``progress(done, total)`` is called per call.
    """
    _check_plan(spec, calls)
    rng = random.Random(seed)
    clock = SimulatedClock(calls[0].when)
    result = HistoryResult(calls[0].when.date(), calls[-1].when.date())
    _, embed = chat_and_embedding_deployments(spec)
    with tempfile.TemporaryDirectory(prefix="aoai-history-") as state:
        stack = LocalStack(
            _fast(spec),
            db_url=db_url,
            state_dir=state,
            write_state=False,
            clock=clock,
            token_limits=False,  # a month replayed in seconds: APIM admitted it at its pace
        )
        info = stack.start()
        clients = {
            sid: (azure_client(info, key), v1_client(info, key)) for sid, key in info.keys.items()
        }
        try:
            for n, call in enumerate(calls, 1):
                clock.now = call.when
                az, v1 = clients[call.subscription]
                outcome = make_call(call.kind, az, v1, rng, call.deployment, embed, rich=True)
                result.calls.append(CallResult(call.subscription, *outcome))
                if progress:
                    progress(n, len(calls))
            if not stack.wait_ingested(timeout=120):
                raise AoaiHelpersError("the local consumer did not store every event within 120 s")
            result.events = stack.event_log.last_sequence_number() + 1
            # the calls are dated in the past: reconcile exactly their window
            margin = timedelta(minutes=1)
            result.reconciled = stack.reconcile_now(
                since=calls[0].when - margin, until=calls[-1].when + margin
            )
        finally:
            for az, v1 in clients.values():
                az.close()
                v1.close()
            stack.stop()
        if stack.consumed is not None:
            result.stored = stack.consumed.result.stored
    return result
