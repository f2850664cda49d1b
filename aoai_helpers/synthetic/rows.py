"""Bulk synthetic usage: N realistic, priced ``ApimAoaiToken`` rows for one month, written directly.

For demos, notebooks and benchmarks at a scale the live gateway would take hours to produce
(``python -m aoai_helpers local generate --rows 1000000 --month 2026-11``). The rows look like
what ingest stores for the spec's traffic:

* **who** — the spec's subscriptions (one per business unit), each with a seeded weight, its
  own model mix and a handful of users (the owner first when the spec names one); every
  subscription gets its ``BusinessUnitMap`` row (existing mappings are left alone) and, for
  mappings created here, a monthly budget near its generated cost (some over, some under);
* **what** — the spec's deployments (operation from the model: embeddings or chat/responses),
  plus one fine-tuned deployment with no rate (``ft-contoso-support``, ~2 % of calls: unpriced,
  as a model nobody priced yet shows up);
* **when** — weekdays about four times busier than weekend days, a working-hours curve over
  the day (UTC), uniform within the hour;
* **how** — ~35 % of chat/responses calls streamed; of those ~8 % with estimated usage and
  ~2 % prompt-only (passthrough capture); ~1.5 % throttled (429) and ~0.3 % failed (500)
  calls, unbilled; log-normal prompt/completion sizes per operation; prompt caching on a third
  of long prompts (128-token steps from 1,024); reasoning tokens for reasoning models.

Rows are ingest's: built by :func:`aoai_helpers.pipeline.writer.call_row`, priced by
:func:`aoai_helpers.core.pricing.price_call` (the rate in effect at the call's time from
``AoaiTokenRate``; a model with no rate is stored unpriced, ``Cost`` NULL; unbilled calls at 0)
and written by :class:`aoai_helpers.pipeline.writer.RowWriter`. The population (who, what,
when) is :mod:`aoai_helpers.synthetic.profile`.

Rows come in time order, as ingest would store a live month: the count is spread over the
hours of the month in proportion to their weights (with seeded noise, rounded by largest
remainder), and each hour's rows are drawn one after the other from a generator seeded with
``(seed, month, hour)``. Row *k* of hour *h* is the same call whatever ``--rows`` is, and its
``RequestId`` is ``gen:<seed>:<month>:<h>:<k>``; rows go through ingest's insert-if-absent
statement. So running the same command again stores nothing, and a larger ``--rows`` with the
same seed tops the month up (each hour to its new share; the rows already there stay).

Speed: rows are drawn in a worker process (one day at a time) while this one writes them in
batches of :data:`DEFAULT_BATCH_SIZE`, one transaction each (``benchmarks/report.py``).
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from aoai_helpers import clock
from aoai_helpers.analysis.report import month_bounds
from aoai_helpers.core.events import Usage
from aoai_helpers.core.pricing import RateBook, price_call
from aoai_helpers.db.business_units import BusinessUnit, read_bu_map, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import bu_map, token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.gateway import OPERATION_IDS
from aoai_helpers.pipeline.workers import ordered_map
from aoai_helpers.pipeline.writer import RowWriter, call_row, sqlite_time
from aoai_helpers.spec import Spec
from aoai_helpers.synthetic.profile import (
    UNPRICED_DEPLOYMENT,
    Profile,
    _Deployment,
    hour_counts,
    make_profile,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "UNPRICED_DEPLOYMENT",
    "GenerateProgress",
    "GenerateResult",
    "Profile",
    "generate",
    "hour_counts",
    "make_profile",
    "synthetic_rows",
]

#: Rows per insert transaction.
DEFAULT_BATCH_SIZE: Final = 50_000
#: From this many rows on, a worker process draws them while this one writes.
_PARALLEL_ROWS: Final = 100_000
_STREAM_SHARE: Final = 0.35
_ESTIMATED_SHARE: Final = 0.08  # of streamed calls
_PROMPT_ONLY_SHARE: Final = 0.02  # of streamed calls
_THROTTLED_SHARE: Final = 0.015
#: EstimateQuality of the generated estimates: visible output counted, or no output seen.
_QUALITY: Final = {"estimated": "approximate", "prompt_only": "lower_bound"}
_FAILED_SHARE: Final = 0.003
#: (median prompt, prompt spread, median completion, completion spread) per operation.
_SIZES: Final[dict[str, tuple[float, float, float, float]]] = {
    "chat": (900.0, 0.9, 220.0, 0.8),
    "responses": (1400.0, 0.9, 320.0, 0.8),
    "completions": (400.0, 0.8, 150.0, 0.7),
    "embeddings": (250.0, 1.0, 0.0, 0.0),
}
_LOG_SIZES: Final = {
    op: (math.log(p), ps, math.log(c) if c else 0.0, cs) for op, (p, ps, c, cs) in _SIZES.items()
}


@dataclass(frozen=True, slots=True)
class GenerateProgress:
    """Where a :func:`generate` run is (given to its ``progress`` callback after each batch)."""

    done: int
    total: int
    stored: int
    seconds: float


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What :func:`generate` wrote."""

    month: str
    seed: int
    requested: int
    stored: int
    skipped: int  # already stored by an earlier run (same seed, month and row number)
    mapped: list[str]  # subscriptions given a BusinessUnitMap row by this run
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows handled (stored or skipped) per second of the whole run."""
        return self.requested / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.requested:,} rows for {self.month} (seed {self.seed}): {self.stored:,} stored, "
            f"{self.skipped:,} already there; {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)"
        )


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


class _Hour:
    """The draws of one hour of the month: a generator seeded with (seed, month, hour), so
    row *k* of an hour is the same whatever the count is."""

    def __init__(
        self, profile: Profile, hour: int, rates: RateBook, stamp: Any, as_text: bool
    ) -> None:
        rng = random.Random(f"rows:{profile.seed}:{profile.month}:{hour}")
        self.rand, self.lognorm = rng.random, rng.lognormvariate
        self.profile, self.rates, self.stamp, self.as_text = profile, rates, stamp, as_text
        self.start = start = profile.hour_starts[hour]
        midnight = start.replace(hour=0)
        self.day: Any = sqlite_time(midnight) if as_text else midnight
        self.caller_cum = _cumulative(profile.caller_weights)
        self.pick_deployment = [_cumulative(c.deployment_weights) for c in profile.callers]
        self.pick_user = [_cumulative(c.user_weights) for c in profile.callers]
        self.rates_now = {d.model: rates.lookup(d.model, start) for d in profile.deployments}
        self.prefix = f"gen:{profile.seed}:{profile.month}:{hour:03d}:"

    def call(self, k: int) -> tuple[int, tuple[Any, ...]]:
        """Row ``k`` of the hour (a ``ROW_COLUMNS`` tuple) and its microsecond in the hour."""
        rand, profile = self.rand, self.profile
        c = bisect_right(self.caller_cum, rand() * self.caller_cum[-1])
        cum = self.pick_deployment[c]
        dep = profile.deployments[bisect_right(cum, rand() * cum[-1])]
        cum = self.pick_user[c]
        who = profile.callers[c].who[bisect_right(cum, rand() * cum[-1])]
        micros = int(rand() * 3_600_000_000)
        when = self.start + timedelta(microseconds=micros)
        op = dep.operation
        if op == "chat":
            o = rand()
            op = "responses" if o < 0.2 else "completions" if o < 0.25 else "chat"
        streaming = op != "embeddings" and rand() < _STREAM_SHARE
        r = rand()
        status = (
            429 if r < _THROTTLED_SHARE else 500 if r < _THROTTLED_SHARE + _FAILED_SHARE else 200
        )
        usage, source, encoding = self._usage(dep, op, streaming, status)
        hint = self.rates_now[dep.model]  # a rate may start or end within the hour
        price = price_call(usage, source, self.rates, dep.model, when, hint=hint)
        call = (2, op, dep.name, profile.api_version, status, dep.reported_model)
        row = call_row(
            sqlite_time(when) if self.as_text else when,
            self.day,
            who,
            OPERATION_IDS[(op, False)],
            dep.model,
            streaming,
            usage,
            f"{self.prefix}{k:06d}",
            call,
            source,
            encoding,
            dep.known,
            price,
            self.stamp,
            _QUALITY.get(source),
        )
        return micros, row

    def _usage(
        self, dep: _Deployment, op: str, streaming: bool, status: int
    ) -> tuple[Usage, str, str | None]:
        """The call's usage, ``UsageSource`` and estimate encoding."""
        if status != 200:
            return Usage(), "unbilled", None
        rand = self.rand
        p_mu, p_sd, c_mu, c_sd = _LOG_SIZES[op]
        prompt = max(1, min(120_000, int(self.lognorm(p_mu, p_sd))))
        completion = max(1, min(16_000, int(self.lognorm(c_mu, c_sd)))) if c_mu else 0
        if streaming:
            s = rand()
            if s < _PROMPT_ONLY_SHARE:
                return Usage(prompt, 0, prompt), "prompt_only", dep.encoding
            if s < _PROMPT_ONLY_SHARE + _ESTIMATED_SHARE:
                return Usage(prompt, completion, prompt + completion), "estimated", dep.encoding
        cached = reasoning = 0
        if prompt >= 1024 and op != "embeddings" and rand() < 0.33:
            cached = max(1024, int(prompt * (0.3 + 0.6 * rand())) // 128 * 128)
        if dep.reasoning and completion:
            reasoning = int(completion * (0.3 + 0.5 * rand()))
        return Usage(prompt, completion, prompt + completion, cached, reasoning), "reported", None


def _hour_rows(
    profile: Profile, hour: int, count: int, rates: RateBook, stamp: Any, as_text: bool
) -> list[tuple[Any, ...]]:
    """The ``count`` rows of hour ``hour`` of the month, in time order (``ROW_COLUMNS`` tuples)."""
    draw = _Hour(profile, hour, rates, stamp, as_text).call
    drawn = [draw(k) for k in range(count)]
    drawn.sort(key=lambda item: item[0])
    return [row for _, row in drawn]


def _day_rows(
    profile: Profile, hours: range, counts: list[int], rates: RateBook, stamp: Any, as_text: bool
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for h in hours:
        rows.extend(_hour_rows(profile, h, counts[h], rates, stamp, as_text))
    return rows


def synthetic_rows(
    profile: Profile,
    rates: RateBook,
    count: int,
    *,
    stamp: datetime | None = None,
    datetimes_as_text: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """The ``count`` rows of ``profile``'s month in time order, as tuples in
    ``aoai_helpers.pipeline.ingest.ROW_COLUMNS`` order (no I/O)."""
    now = stamp or clock.system_utcnow()
    stamp_value = sqlite_time(now) if datetimes_as_text else now
    counts = hour_counts(profile, count)
    for h, n in enumerate(counts):
        yield from _hour_rows(profile, h, n, rates, stamp_value, datetimes_as_text)


_WORKER: tuple[Profile, list[int], RateBook, Any, bool] | None = None


def _worker_init(
    profile: Profile, counts: list[int], rates: RateBook, stamp: Any, as_text: bool
) -> None:
    global _WORKER
    _WORKER = (profile, counts, rates, stamp, as_text)


def _worker_day(hours: range) -> list[tuple[Any, ...]]:
    if _WORKER is None:
        raise RuntimeError("generator worker used before its initializer ran")
    profile, counts, rates, stamp, as_text = _WORKER
    return _day_rows(profile, hours, counts, rates, stamp, as_text)


def _days(
    profile: Profile, counts: list[int], rates: RateBook, stamp: Any, as_text: bool, workers: int
) -> Generator[list[tuple[Any, ...]], None, None]:
    """The rows of each day in turn, drawn in ``workers`` processes (0: in this one) while the
    caller writes the days before."""
    days = [range(h, min(h + 24, len(counts))) for h in range(0, len(counts), 24)]
    if workers <= 0:
        for hours in days:
            yield _day_rows(profile, hours, counts, rates, stamp, as_text)
        return
    init = (profile, counts, rates, stamp, as_text)
    drawn = ordered_map(
        _worker_day,
        days,
        workers=workers,
        initializer=_worker_init,
        initargs=init,
        ahead=2 * workers,
    )
    with closing(drawn):
        yield from drawn


def _map_subscriptions(engine: Engine, spec: Spec) -> list[str]:
    """Give each spec subscription without a ``BusinessUnitMap`` row one; return their ids."""
    with transaction(engine) as conn:
        mapped = {u.subscription_id for u in read_bu_map(conn)}
        new = [
            BusinessUnit(s.id, s.business_unit, s.display_name, s.cost_center)
            for s in spec.subscriptions
            if s.id not in mapped
        ]
        set_bu(conn, new)
    return [u.subscription_id for u in new]


def _set_budgets(engine: Engine, profile: Profile, subscriptions: list[str]) -> None:
    """Budgets near each new mapping's generated cost: some BUs end over budget, most under."""
    if not subscriptions:
        return
    start, end = month_bounds(profile.month)
    t = token_table.c
    factors = (1.3, 0.85, 1.6, 1.1, 0.7, 2.0)
    with transaction(engine) as conn:
        costs = dict(
            conn.execute(
                select(t.SubscriptionId, func.sum(t.Cost))
                .where(
                    t.ExecTimeUTC >= start,
                    t.ExecTimeUTC < end,
                    t.SubscriptionId.in_(subscriptions),
                )
                .group_by(t.SubscriptionId)
            ).all()
        )
        for i, sid in enumerate(subscriptions):
            cost = float(costs.get(sid) or 0.0)
            if cost <= 0:
                continue
            raw = cost * factors[(i + profile.seed) % len(factors)]
            step = 10 ** max(0, math.floor(math.log10(raw)) - 1)
            conn.execute(
                update(bu_map)
                .where(bu_map.c.SubscriptionId == sid)
                .values(MonthlyBudget=float(math.ceil(raw / step) * step))
            )


def _check(month: str, rows: int, seed: int, batch_size: int) -> None:
    """Refuse a month that is not over (its calls would be dated in the future), bad counts."""
    _, end = month_bounds(month)
    if not clock.is_complete(month):
        raise ConfigError(
            f"{month} is not over (it ends {end:%Y-%m-%d}; now is {clock.now():%Y-%m-%dT%H:%MZ}): "
            f"generate a complete month, e.g. --month {clock.previous_month()}"
        )
    if rows < 0:
        raise ConfigError(f"rows must not be negative, not {rows}")
    if not 0 <= seed < 2**63:  # keeps the RequestId within its 64 characters
        raise ConfigError(f"seed must be between 0 and 2**63 - 1, not {seed}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, not {batch_size}")


def _write(
    engine: Engine,
    writer: RowWriter,
    stamp: datetime,
    days: Iterator[list[tuple[Any, ...]]],
    rows: int,
    batch_size: int,
    progress: Callable[[GenerateProgress], None] | None,
    began: float,
) -> int:
    """Write the drawn days in batches of ``batch_size`` (one transaction each); rows stored."""
    stored = done = 0
    pending: list[tuple[Any, ...]] = []
    for day in days:
        pending.extend(day)
        while len(pending) >= batch_size or (pending and done + len(pending) == rows):
            batch, pending = pending[:batch_size], pending[batch_size:]
            with transaction(engine) as conn:
                writer.lock(conn)  # as every writer of rows (and of their rollup) does
                stored += writer.insert_count(conn, batch, stamp)
            done += len(batch)
            if progress is not None:
                progress(GenerateProgress(done, rows, stored, time.perf_counter() - began))
    return stored


def generate(
    engine: Engine,
    spec: Spec,
    *,
    rows: int,
    month: str,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[GenerateProgress], None] | None = None,
    workers: int | None = None,
) -> GenerateResult:
    """Write ``rows`` synthetic calls of ``month`` into ``engine`` (see the module docstring).

    Creates or upgrades the schema first (``db init``: default rates into a new database) and
    maps the spec's subscriptions to their business units. Each batch is one transaction;
    ``progress`` is called after each. Raises :class:`ConfigError` for a bad month or count,
    and for a month that is not over by the clock (:mod:`aoai_helpers.clock`): its calls would
    be dated in the future.
    """
    from aoai_helpers.pipeline.service import ensure_db

    _check(month, rows, seed, batch_size)
    began = time.perf_counter()
    ensure_db(engine)
    mapped = _map_subscriptions(engine, spec)
    profile = make_profile(spec, month, seed)
    with transaction(engine) as conn:
        rates = RateBook(read_rates(conn))
    if workers is None:
        workers = 1 if rows >= _PARALLEL_ROWS and (os.cpu_count() or 1) >= 2 else 0
    writer = RowWriter(engine.dialect)
    stamp = writer.stamp()  # the writer's stamp (see RowWriter.insert_count): physical time
    counts = hour_counts(profile, rows)
    days = _days(profile, counts, rates, writer.time(stamp), writer.datetimes_as_text, workers)
    with closing(days):
        stored = _write(engine, writer, stamp, days, rows, batch_size, progress, began)
    _set_budgets(engine, profile, mapped)
    return GenerateResult(
        month=month,
        seed=seed,
        requested=rows,
        stored=stored,
        skipped=rows - stored,
        mapped=mapped,
        seconds=time.perf_counter() - began,
    )
