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

Pricing is ingest's: the rate in effect at the call's time from ``AoaiTokenRate``
(:class:`~aoai_helpers.core.pricing.RateBook`) and :func:`~aoai_helpers.core.pricing.cost_of`; a model
with no rate is stored unpriced (``Cost`` NULL), unbilled calls at 0.

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
import multiprocessing
import os
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from aoai_helpers import clock
from aoai_helpers.analysis.report import month_bounds
from aoai_helpers.core.events import Usage
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import RateBook, cost_of
from aoai_helpers.db.rates import BusinessUnit, read_bu_map, read_rates, set_bu
from aoai_helpers.db.store import bu_map, token_table, transaction
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.gateway import OPERATION_IDS
from aoai_helpers.pipeline.ingest import ROW_COLUMNS, row_insert
from aoai_helpers.spec import Spec, Subscription

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
#: The extra deployment whose model has no rate (its calls are stored unpriced).
UNPRICED_DEPLOYMENT: Final = ("ft-contoso-support", "contoso-support-ft")
_UNPRICED_SHARE: Final = 0.02
_STREAM_SHARE: Final = 0.35
_ESTIMATED_SHARE: Final = 0.08  # of streamed calls
_PROMPT_ONLY_SHARE: Final = 0.02  # of streamed calls
_THROTTLED_SHARE: Final = 0.015
_FAILED_SHARE: Final = 0.003
_WEEKEND_WEIGHT: Final = 0.25
#: Relative calls per UTC hour (a European working day with a long tail).
_HOURS: Final = (1, 1, 1, 1, 2, 3, 6, 10, 14, 16, 16, 14, 11, 14, 16, 15, 13, 10, 7, 5, 3, 2, 1, 1)
#: (median prompt, prompt spread, median completion, completion spread) per operation.
_SIZES: Final[dict[str, tuple[float, float, float, float]]] = {
    "chat": (900.0, 0.9, 220.0, 0.8),
    "responses": (1400.0, 0.9, 320.0, 0.8),
    "completions": (400.0, 0.8, 150.0, 0.7),
    "embeddings": (250.0, 1.0, 0.0, 0.0),
}
_FIRST: Final = (
    "Ana", "Ben", "Chloe", "David", "Elif", "Femi", "Grace", "Hugo", "Ines", "Jonas", "Kenji",
    "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
)  # fmt: skip
_LAST: Final = (
    "Andersen", "Bauer", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ito",
    "Jansen", "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Schmidt",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Deployment:
    name: str
    reported_model: str
    model: str  # normalised: the pricing key
    encoding: str
    known: bool
    operation: str
    reasoning: bool


@dataclass(frozen=True, slots=True)
class _Caller:
    subscription: Subscription
    who: tuple[tuple[str | None, ...], ...]  # per user: the 8 columns GatewayRegion … ApiName
    user_weights: tuple[float, ...]
    deployment_weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything the rows are drawn from (built once by :func:`make_profile`)."""

    month: str
    seed: int
    api_version: str
    callers: tuple[_Caller, ...]
    caller_weights: tuple[float, ...]
    deployments: tuple[_Deployment, ...]
    hour_starts: tuple[datetime, ...]
    hour_weights: tuple[float, ...]


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


def _is_reasoning(model: str) -> bool:
    return (len(model) > 1 and model[0] == "o" and model[1].isdigit()) or model.startswith("gpt-5")


def _users(sub: Subscription, rng: random.Random) -> tuple[tuple[str, str], ...]:
    domain = "".join(c for c in sub.business_unit.lower() if c.isalnum()) or "bu"
    people: list[tuple[str, str]] = []
    if sub.owner_name:
        people.append((sub.owner_name[:50], (sub.owner_email or "")[:50]))
    for _ in range(rng.randint(4, 24)):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        person = (f"{first} {last}", f"{first}.{last}@{domain}.example.com".lower()[:50])
        if person not in people:
            people.append(person)
    return tuple(people)


def make_profile(spec: Spec, month: str, seed: int = 0) -> Profile:
    """The population the rows of ``month`` are drawn from (see the module docstring)."""
    start, end = month_bounds(month)
    rng = random.Random(f"profile:{seed}")
    deployments = []
    models = spec.deployment_models()
    models.setdefault(*UNPRICED_DEPLOYMENT)
    for name, reported in models.items():
        info = normalize_model(reported)
        deployments.append(
            _Deployment(
                name=name,
                reported_model=reported,
                model=info.name,
                encoding=info.encoding,
                known=info.known,
                operation="embeddings" if "embedding" in info.name else "chat",
                reasoning=_is_reasoning(info.name),
            )
        )
    base = [
        (_UNPRICED_SHARE / (1 - _UNPRICED_SHARE)) * len(deployments[:-1])
        if d.name == UNPRICED_DEPLOYMENT[0]
        else 1.0
        for d in deployments
    ]
    callers = []
    for sub in spec.subscriptions:
        users = _users(sub, rng)
        mix = [
            b if i == len(base) - 1 else b * rng.lognormvariate(0, 0.8) for i, b in enumerate(base)
        ]
        gateway = (spec.apim.region, spec.apim.service_name, sub.id, sub.display_name)
        api = (spec.product.display_name, spec.apim.api_display_name)
        who = tuple((*gateway, name, email, *api) for name, email in users)
        callers.append(
            _Caller(
                subscription=sub,
                who=who,
                user_weights=tuple(1 / (i + 1) ** 0.9 for i in range(len(users))),
                deployment_weights=tuple(mix),
            )
        )
    caller_weights = tuple(rng.lognormvariate(0, 0.7) for _ in callers)
    hour_rng = random.Random(f"hours:{seed}:{month}")
    hour_starts, hour_weights = [], []
    day = start
    while day < end:
        day_weight = _WEEKEND_WEIGHT if day.weekday() >= 5 else 1.0
        for hour, weight in enumerate(_HOURS):
            hour_starts.append(day + timedelta(hours=hour))
            hour_weights.append(day_weight * weight * hour_rng.lognormvariate(0, 0.15))
        day += timedelta(days=1)
    return Profile(
        month=month,
        seed=seed,
        api_version=spec.apim.api_version,
        callers=tuple(callers),
        caller_weights=caller_weights,
        deployments=tuple(deployments),
        hour_starts=tuple(hour_starts),
        hour_weights=tuple(hour_weights),
    )


def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores (as ingest writes it)."""
    text = value.isoformat(" ")
    return text if value.microsecond else text + ".000000"


def hour_counts(profile: Profile, count: int) -> list[int]:
    """Rows per hour of the month for ``count`` rows: proportional to the hour weights,
    rounded by largest remainder so they add up to ``count`` exactly."""
    total = sum(profile.hour_weights)
    quotas = [count * w / total for w in profile.hour_weights]
    counts = [int(q) for q in quotas]
    short = count - sum(counts)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def _hour_rows(
    profile: Profile, hour: int, count: int, rates: RateBook, stamp: Any, as_text: bool
) -> list[tuple[Any, ...]]:
    """The ``count`` rows of hour ``hour`` of the month, in time order (``ROW_COLUMNS`` tuples).

    Drawn one after the other from a generator seeded with (seed, month, hour): row *k* of an
    hour is the same whatever ``count`` is.
    """
    rng = random.Random(f"rows:{profile.seed}:{profile.month}:{hour}")
    rand, lognorm = rng.random, rng.lognormvariate
    start = profile.hour_starts[hour]
    day_text = _sqlite_time(start.replace(hour=0))
    day: Any = day_text if as_text else start.replace(hour=0)
    callers, deployments = profile.callers, profile.deployments
    caller_cum = _cumulative(profile.caller_weights)
    pick_deployment = [_cumulative(c.deployment_weights) for c in callers]
    pick_user = [_cumulative(c.user_weights) for c in callers]
    sizes = {
        op: (math.log(p), ps, math.log(c) if c else 0.0, cs)
        for op, (p, ps, c, cs) in _SIZES.items()
    }
    rates_now = {d.model: rates.lookup(d.model, start) for d in deployments}
    prefix = f"gen:{profile.seed}:{profile.month}:{hour:03d}:"
    api_version = profile.api_version
    drawn: list[tuple[int, tuple[Any, ...]]] = []
    for k in range(count):
        c = bisect_right(caller_cum, rand() * caller_cum[-1])
        cum = pick_deployment[c]
        dep = deployments[bisect_right(cum, rand() * cum[-1])]
        cum = pick_user[c]
        who = callers[c].who[bisect_right(cum, rand() * cum[-1])]
        micros = int(rand() * 3_600_000_000)
        when = start + timedelta(microseconds=micros)
        op = dep.operation
        if op == "chat":
            o = rand()
            op = "responses" if o < 0.2 else "completions" if o < 0.25 else "chat"
        streaming = op != "embeddings" and rand() < _STREAM_SHARE
        r = rand()
        status = (
            429 if r < _THROTTLED_SHARE else 500 if r < _THROTTLED_SHARE + _FAILED_SHARE else 200
        )
        cached = reasoning = 0
        encoding: str | None = None
        if status != 200:
            prompt = completion = 0
            source = "unbilled"
        else:
            p_mu, p_sd, c_mu, c_sd = sizes[op]
            prompt = max(1, min(120_000, int(lognorm(p_mu, p_sd))))
            completion = max(1, min(16_000, int(lognorm(c_mu, c_sd)))) if c_mu else 0
            source = "reported"
            if streaming:
                s = rand()
                if s < _PROMPT_ONLY_SHARE:
                    source, completion, encoding = "prompt_only", 0, dep.encoding
                elif s < _PROMPT_ONLY_SHARE + _ESTIMATED_SHARE:
                    source, encoding = "estimated", dep.encoding
            if source == "reported":
                if prompt >= 1024 and op != "embeddings" and rand() < 0.33:
                    cached = max(1024, int(prompt * (0.3 + 0.6 * rand())) // 128 * 128)
                if dep.reasoning and completion:
                    reasoning = int(completion * (0.3 + 0.5 * rand()))
        total = prompt + completion
        cost: float | None
        currency = rate_id = None
        if source == "unbilled":
            cost = 0.0  # as ingest stores a call that was never billed
        else:
            rate = rates_now[dep.model]
            if rate is None or not rate.covers(when):  # a rate starting or ending in this hour
                rate = rates.lookup(dep.model, when)
            if rate is None:
                cost = None  # unpriced: never 0
            else:
                cost = cost_of(Usage(prompt, completion, total, cached, reasoning), rate)
                currency, rate_id = rate.currency, rate.rate_id
        # fmt: off
        drawn.append((micros, (
            _sqlite_time(when) if as_text else when, day, *who,
            OPERATION_IDS[(op, False)], dep.model, int(streaming), prompt, completion, total,
            f"{prefix}{k:06d}", 2, op, dep.name, api_version, status, dep.reported_model,
            cached, reasoning, source, encoding, int(dep.known), cost, currency, rate_id, stamp,
        )))  # one ROW_COLUMNS tuple
        # fmt: on
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
    stamp_value = _sqlite_time(now) if datetimes_as_text else now
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
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of each day in turn, drawn in ``workers`` processes (0: in this one) while the
    caller writes the days before."""
    days = [range(h, min(h + 24, len(counts))) for h in range(0, len(counts), 24)]
    if workers <= 0:
        for hours in days:
            yield _day_rows(profile, hours, counts, rates, stamp, as_text)
        return
    context = multiprocessing.get_context("spawn")  # no fork: safe with threads in the parent
    init = (profile, counts, rates, stamp, as_text)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=init
    ) as pool:
        pending: deque[Future[list[tuple[Any, ...]]]] = deque()
        try:
            for hours in days:
                pending.append(pool.submit(_worker_day, hours))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _params(
    batch: list[tuple[Any, ...]], names: list[str], index: list[int], positional: bool
) -> Any:
    """Rows as the driver wants them (ingest's statement; tuples are in ROW_COLUMNS order)."""
    if positional:
        return batch if names == list(ROW_COLUMNS) else [tuple(r[i] for i in index) for r in batch]
    return [dict(zip(names, (r[i] for i in index), strict=True)) for r in batch]


def _insert(
    engine: Engine,
    sql: str,
    params: Any,
    batch: list[tuple[Any, ...]],
    stamp: datetime,
    exact: bool,
) -> int:
    """Insert one batch (one transaction), skipping stored ids; return the rows stored."""
    with transaction(engine) as conn:
        count: int = conn.exec_driver_sql(sql, params).rowcount
        if exact and count >= 0:
            return count
        # pyodbc sums no rowcount over executemany: count this run's rows of the batch
        rid = ROW_COLUMNS.index("RequestId")
        t = token_table.c
        count = 0
        for j in range(0, len(batch), 500):
            ids = [r[rid] for r in batch[j : j + 500]]
            count += conn.execute(
                select(func.count())
                .select_from(token_table)
                .where(t.RequestId.in_(ids), t.IngestedAtUTC == stamp)
            ).scalar_one()
        return count


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
    began = time.perf_counter()
    ensure_db(engine)
    mapped = _map_subscriptions(engine, spec)
    profile = make_profile(spec, month, seed)
    with transaction(engine) as conn:
        rates = RateBook(read_rates(conn))
    dialect = engine.dialect
    sql, names, positional = row_insert(dialect)
    index = [ROW_COLUMNS.index(n) for n in names]
    exact = dialect.name != "mssql" and dialect.supports_sane_multi_rowcount
    stamp = clock.system_utcnow()  # the writer's stamp (see _insert): physical time
    if dialect.name == "mssql":  # DATETIME keeps 1/300 s: a 10 ms stamp is stored exactly
        stamp = stamp.replace(microsecond=stamp.microsecond // 10_000 * 10_000)
    as_text = dialect.name == "sqlite"
    if workers is None:
        workers = 1 if rows >= _PARALLEL_ROWS and (os.cpu_count() or 1) >= 2 else 0
    counts = hour_counts(profile, rows)
    stored = done = 0
    pending: list[tuple[Any, ...]] = []
    stamp_value = _sqlite_time(stamp) if as_text else stamp
    for day in _days(profile, counts, rates, stamp_value, as_text, workers):
        pending.extend(day)
        while len(pending) >= batch_size or (pending and done + len(pending) == rows):
            batch, pending = pending[:batch_size], pending[batch_size:]
            stored += _insert(
                engine, sql, _params(batch, names, index, positional), batch, stamp, exact
            )
            done += len(batch)
            if progress is not None:
                progress(GenerateProgress(done, rows, stored, time.perf_counter() - began))
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
