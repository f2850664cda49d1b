"""Reconciliation: provisional rows take the exact usage APIM's language-model log recorded.

A pass-through stream is billed by its prompt when it is ingested (``prompt_only``: the
gateway never reads a streamed body), a captured stream without a usage chunk by our own count
(``estimated``). APIM logs every call's tokens to its language-model log
(:mod:`aoai_helpers.eventlog.llmlog`) minutes later. :func:`reconcile` reads a window of that log, joins
it to the rows on ``RequestId`` (the log's ``CorrelationId``), and rewrites each matched
provisional row with the logged numbers:

- ``UsageSource`` becomes ``reconciled``; ``PromptTokens`` / ``CompletionTokens`` /
  ``TotalTokens`` take the log's values; the cost is recomputed with the rate in effect at the
  call's time (cached tokens stay as they were: the log has no column for them);
- what the row had before goes to ``PriorUsageSource``, ``PriorPromptTokens``,
  ``PriorCompletionTokens``, ``PriorTotalTokens``, ``PriorModelName``, ``PriorCost`` (set once,
  at the first reconciliation, and never overwritten) and ``ReconciledAtUTC`` says when;
- a row whose model was unknown (a deployment name, or no model at all) takes the log's
  ``ModelName`` when that one is known, and ``ReportedModel`` is filled when empty;
- a row already ``reconciled`` is rewritten only when later records of its call give larger
  counts (a part of a multi-part record that arrived late); ``reported`` and ``unbilled`` rows
  are never touched.

Every update is guarded by the row's current values (``… WHERE Id = ? AND UsageSource IN
(…)``), so running twice, two reconcilers at once, or the same records delivered again change
nothing more. The log is read before anything is written: a query that fails or is throttled
(the source retries with backoff, then raises) leaves every row and the watermark as they were.

The window: from ``since`` (default: the watermark of this source in ``ReconcileState``, less
``lookback_minutes`` — log records arrive late; without a watermark, the oldest provisional
event-v2 row of the last 30 days) to ``until`` (default: now, :mod:`aoai_helpers.clock`). The
watermark moves to ``until`` in the same transaction as the last updates.

What is left: provisional event-v2 rows (``prompt_only`` / ``estimated``) younger than
``grace_hours`` are *pending* — the log may still bring them; older ones are *unmatched* and
are listed with their count and cost (:class:`ReconcileResult`), never taken as exact. v1
history rows (ids ``v1:…``) are never in APIM's log and stay estimated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection, Engine

from aoai_helpers import clock
from aoai_helpers.core.events import Usage
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import RateBook, price_call
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import reconcile_state, token_table
from aoai_helpers.eventlog.llmlog import LlmLogSource, LoggedUsage, assemble
from aoai_helpers.pipeline.writer import RowWriter

if TYPE_CHECKING:  # the spec's pydantic models cost ~140 ms to import: report never needs them
    from aoai_helpers.spec import Reconcile

__all__ = [
    "PROVISIONAL_SOURCES",
    "ProvisionalRows",
    "ReconcileResult",
    "provisional_rows",
    "reconcile",
]

#: Usage sources whose numbers are not (yet) the API's: they can be reconciled.
PROVISIONAL_SOURCES: Final = ("prompt_only", "estimated")
#: How far back a first run (no watermark) looks for provisional rows.
FIRST_RUN_HORIZON: Final = timedelta(days=30)
#: The log's TimeGenerated and the event's ExecTimeUTC both mark the start of the request;
#: the window is widened by this much on each side so neither clock's skew loses a record.
CLOCK_MARGIN: Final = timedelta(minutes=5)
_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class ProvisionalRows:
    """Provisional event-v2 rows of a window: how many, and what they cost so far."""

    calls: int = 0
    cost: float = 0.0
    oldest: datetime | None = None


@dataclass
class ReconcileResult:
    """What one :func:`reconcile` run read and changed."""

    source: str
    start: datetime
    end: datetime
    records: int = 0
    calls_logged: int = 0
    upgraded: int = 0
    from_prompt_only: int = 0
    from_estimated: int = 0
    corrected: int = 0  # rows already reconciled that later records raised
    unchanged: int = 0  # matched rows that needed nothing (reported, or already exact)
    added_cost: float = 0.0
    pending: ProvisionalRows = field(default_factory=ProvisionalRows)
    unmatched: ProvisionalRows = field(default_factory=ProvisionalRows)

    def summary(self) -> str:
        """The one-line summary ``reconcile`` and the function print."""
        line = (
            f"{self.records} log records ({self.calls_logged} calls) from {_iso(self.start)} to "
            f"{_iso(self.end)}: {self.upgraded} rows reconciled ({self.from_prompt_only} prompt-only, "
            f"{self.from_estimated} estimated"
            + (f", {self.corrected} corrected" if self.corrected else "")
            + f"; cost {self.added_cost:+.6f})"
        )
        line += f"; {self.pending.calls} pending within the grace window"
        if self.unmatched.calls:
            line += (
                f"; {self.unmatched.calls} unmatched past it (cost so far {self.unmatched.cost:.6f},"
                f" oldest {_iso(self.unmatched.oldest)})"
            )
        return line


def _iso(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _naive(when: datetime | None) -> datetime | None:
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def _v2() -> Any:
    return ~token_table.c.RequestId.like("v1:%")


def provisional_rows(
    conn: Connection, *, start: datetime | None = None, end: datetime | None = None
) -> ProvisionalRows:
    """Provisional event-v2 rows with ``start <= ExecTimeUTC < end`` (either bound optional)."""
    t = token_table.c
    cond = [t.UsageSource.in_(PROVISIONAL_SOURCES), _v2()]
    if start is not None:
        cond.append(t.ExecTimeUTC >= start)
    if end is not None:
        cond.append(t.ExecTimeUTC < end)
    calls, cost, oldest = conn.execute(
        select(func.count(), func.coalesce(func.sum(t.Cost), 0.0), func.min(t.ExecTimeUTC)).where(
            and_(*cond)
        )
    ).one()
    if isinstance(oldest, str):  # SQLite returns aggregates of DATETIME columns as text
        oldest = datetime.fromisoformat(oldest)
    return ProvisionalRows(int(calls), float(cost), oldest)


def _window(
    conn: Connection, source: str, settings: Reconcile, since: datetime | None, until: datetime
) -> datetime:
    if since is not None:
        return since
    mark = conn.execute(
        select(reconcile_state.c.WatermarkUTC).where(reconcile_state.c.Source == source)
    ).scalar()
    if isinstance(mark, str):
        mark = datetime.fromisoformat(mark)
    if mark is not None:
        return min(mark, until) - timedelta(minutes=settings.lookback_minutes)
    oldest = provisional_rows(conn, start=until - FIRST_RUN_HORIZON, end=until).oldest
    return oldest if oldest is not None else until - timedelta(minutes=settings.lookback_minutes)


def reconcile(
    engine: Engine,
    source: LlmLogSource,
    settings: Reconcile,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    rates: RateBook | None = None,
) -> ReconcileResult:
    """Reconcile the provisional rows of a window with ``source`` (see the module docstring)."""
    end = _naive(until) or clock.utcnow()
    with transaction(engine) as conn:
        start = _window(conn, source.name, settings, _naive(since), end)
        book = rates or RateBook(read_rates(conn))
    if start > end:
        start = end
    records = source.fetch(start - CLOCK_MARGIN, end + CLOCK_MARGIN)
    logged = assemble(records)
    result = ReconcileResult(
        source.name, start, end, records=len(records), calls_logged=len(logged)
    )
    now = clock.system_utcnow()
    ids = sorted(logged)
    with transaction(engine) as conn:
        writer = RowWriter(conn.dialect)
        writer.lock(conn)  # before the first update: ingesters wait on it, never the other way
        days: list[datetime] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = [logged[k] for k in ids[i : i + _CHUNK]]
            days += _upgrade(conn, writer, chunk, book, now, result)
        writer.rollup.rebuild_days(conn, days)  # the days rewritten, summed again, once
        _save_watermark(conn, source.name, end, now, result)
        grace = timedelta(hours=settings.grace_hours)
        result.pending = provisional_rows(conn, start=end - grace, end=end)
        result.unmatched = provisional_rows(conn, start=end - FIRST_RUN_HORIZON, end=end - grace)
    return result


_COLUMNS: Final = (
    "Id",
    "RequestId",
    "ExecTimeUTC",
    "UsageSource",
    "ModelName",
    "ModelKnown",
    "ReportedModel",
    "PromptTokens",
    "CompletionTokens",
    "TotalTokens",
    "CachedTokens",
    "Cost",
    "PriorUsageSource",
)


def _upgrade(
    conn: Connection,
    writer: RowWriter,
    usages: Sequence[LoggedUsage],
    rates: RateBook,
    now: datetime,
    result: ReconcileResult,
) -> list[datetime]:
    """Rewrite the matched rows of ``usages``; return the call times of the rows rewritten."""
    t = token_table.c
    by_id = {u.correlation_id: u for u in usages}
    rows = conn.execute(
        # ids as APIM writes them (context.RequestId: a lower-case GUID); the unique index serves
        select(*(t[c] for c in _COLUMNS)).where(t.RequestId.in_(list(by_id)))
    ).all()
    days: list[datetime] = []
    for row in rows:
        logged = by_id[row.RequestId.lower()]
        change = _change(row, logged, rates, now)
        if change is None:
            result.unchanged += 1
            continue
        values, guard = change
        if not writer.update_guarded(conn, row.Id, guard, values):
            result.unchanged += 1  # a concurrent reconciler got there first
            continue
        days.append(_as_datetime(row.ExecTimeUTC))
        if row.UsageSource == "reconciled":
            result.corrected += 1
        else:
            result.upgraded += 1
            if row.UsageSource == "prompt_only":
                result.from_prompt_only += 1
            else:
                result.from_estimated += 1
        result.added_cost += (values.get("Cost") or 0.0) - (row.Cost or 0.0)
    return days


def _as_datetime(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _counts(
    row: Any, logged: LoggedUsage
) -> tuple[int, int, int, list[Any], dict[str, Any]] | None:
    """The new counts of a matched row, its update's guard and the prior values it keeps;
    None when nothing changes (not provisional, or a reconciled row the log does not raise)."""
    t = token_table.c
    if row.UsageSource == "reconciled":
        raised = (
            logged.prompt_tokens > row.PromptTokens
            or logged.completion_tokens > row.CompletionTokens
            or logged.total_tokens > row.TotalTokens
        )
        if not raised:
            return None
        prompt = max(logged.prompt_tokens, row.PromptTokens)
        completion = max(logged.completion_tokens, row.CompletionTokens)
        total = max(logged.total_tokens, row.TotalTokens, prompt + completion)
        guard = [
            t.UsageSource == "reconciled",
            t.PromptTokens == row.PromptTokens,
            t.CompletionTokens == row.CompletionTokens,
            t.TotalTokens == row.TotalTokens,
        ]
        return prompt, completion, total, guard, {}
    if row.UsageSource not in PROVISIONAL_SOURCES:
        return None  # reported or unbilled: the API's own numbers, or nothing served
    prior = {
        "PriorUsageSource": row.UsageSource,
        "PriorPromptTokens": row.PromptTokens,
        "PriorCompletionTokens": row.CompletionTokens,
        "PriorTotalTokens": row.TotalTokens,
        "PriorModelName": row.ModelName,
        "PriorCost": row.Cost,
        "UsageSource": "reconciled",
    }
    guard = [t.UsageSource == row.UsageSource]
    return logged.prompt_tokens, logged.completion_tokens, logged.total_tokens, guard, prior


def _change(
    row: Any, logged: LoggedUsage, rates: RateBook, now: datetime
) -> tuple[dict[str, Any], list[Any]] | None:
    """The new values of a matched row and the guard of its update; None when nothing changes."""
    counts = _counts(row, logged)
    if counts is None:
        return None
    prompt, completion, total, guard, values = counts
    model, known = row.ModelName, bool(row.ModelKnown)
    if not known and logged.model_name:
        info = normalize_model(logged.model_name)
        if info.known:
            model, known = info.name, True
    when = _as_datetime(row.ExecTimeUTC)  # SQLite through a text column read: text
    cached = min(row.CachedTokens or 0, prompt)
    usage = Usage(prompt, completion, total, cached, 0)
    cost, currency, rate_id = price_call(usage, "reconciled", rates, model, when)
    values.update(
        PromptTokens=prompt,
        CompletionTokens=completion,
        TotalTokens=total,
        CachedTokens=cached,
        ModelName=model,
        ModelKnown=1 if known else 0,
        EstimateQuality=None,  # exact now: APIM's log reported it
        Cost=cost,
        Currency=currency,
        RateId=rate_id,
        ReconciledAtUTC=now,
    )
    if row.ReportedModel is None and logged.model_name:
        values["ReportedModel"] = logged.model_name
    return values, guard


def _save_watermark(
    conn: Connection, source: str, end: datetime, now: datetime, result: ReconcileResult
) -> None:
    s = reconcile_state.c
    values = {
        "WatermarkUTC": end,
        "UpdatedAtUTC": now,
        "LastRecords": result.records,
        "LastUpgraded": result.upgraded + result.corrected,
    }
    found = conn.execute(select(s.WatermarkUTC).where(s.Source == source)).first()
    if found is None:
        conn.execute(reconcile_state.insert().values(Source=source, **values))
    else:
        # never move a watermark back (an explicit --since/--until run of an older window)
        previous = _as_datetime(found[0])
        values["WatermarkUTC"] = max(previous, end)
        conn.execute(update(reconcile_state).where(s.Source == source).values(**values))


def upgraded_ids(conn: Connection, request_ids: Iterable[str]) -> set[str]:
    """Of ``request_ids``, those whose row is ``reconciled`` (for tests and the smoke test)."""
    t = token_table.c
    ids = list(request_ids)
    found: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        found.update(
            conn.execute(
                select(t.RequestId).where(
                    t.RequestId.in_(ids[i : i + _CHUNK]), t.UsageSource == "reconciled"
                )
            ).scalars()
        )
    return found
