"""The population synthetic rows are drawn from: callers, deployments, hours of a month.

:func:`make_profile` reads the spec (subscriptions, their users, deployments and models) and
draws, seeded, who calls how much, with which model mix, and how busy each hour of the month
is (weekdays about four times busier than weekend days, a working-hours curve, UTC).
:func:`hour_counts` spreads a row count over the hours. Used by :mod:`aoai_helpers.synthetic.rows`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from aoai_helpers.analysis.report import month_bounds
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.spec import Spec, Subscription

__all__ = ["UNPRICED_DEPLOYMENT", "Profile", "hour_counts", "make_profile"]

#: The extra deployment whose model has no rate (its calls are stored unpriced).
UNPRICED_DEPLOYMENT: Final = ("ft-contoso-support", "contoso-support-ft")
_UNPRICED_SHARE: Final = 0.02
_WEEKEND_WEIGHT: Final = 0.25
#: Relative calls per UTC hour (a European working day with a long tail).
_HOURS: Final = (1, 1, 1, 1, 2, 3, 6, 10, 14, 16, 16, 14, 11, 14, 16, 15, 13, 10, 7, 5, 3, 2, 1, 1)
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


def _deployments(spec: Spec) -> list[_Deployment]:
    """The spec's deployments, plus :data:`UNPRICED_DEPLOYMENT` (last)."""
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
                reasoning=info.reasoning,
            )
        )
    return deployments


def _hours(month: str, seed: int) -> tuple[list[datetime], list[float]]:
    """The start and the (seeded, noisy) weight of every hour of ``month``."""
    start, end = month_bounds(month)
    hour_rng = random.Random(f"hours:{seed}:{month}")
    hour_starts, hour_weights = [], []
    day = start
    while day < end:
        day_weight = _WEEKEND_WEIGHT if day.weekday() >= 5 else 1.0
        for hour, weight in enumerate(_HOURS):
            hour_starts.append(day + timedelta(hours=hour))
            hour_weights.append(day_weight * weight * hour_rng.lognormvariate(0, 0.15))
        day += timedelta(days=1)
    return hour_starts, hour_weights


def make_profile(spec: Spec, month: str, seed: int = 0) -> Profile:
    """The population the rows of ``month`` are drawn from (see the module docstring)."""
    month_bounds(month)  # a bad month is refused before anything is drawn
    rng = random.Random(f"profile:{seed}")
    deployments = _deployments(spec)
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
    hour_starts, hour_weights = _hours(month, seed)
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
