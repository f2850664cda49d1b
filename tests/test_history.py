"""Demo history: the plan (pure, seeded) and the calls it makes through the real local gateway."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import load_spec
from aoai_helpers.synthetic.history import (
    KIND_WEIGHTS,
    PlannedCall,
    drive_history,
    history_days,
    plan_history,
)
from aoai_helpers.synthetic.traffic import CALL_KINDS

SPEC = load_spec(Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml")


def _at(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def test_days_run_from_the_first_of_the_month_to_today() -> None:
    nov3 = _at(date(2026, 11, 3), 9)
    assert history_days("2026-11", nov3) == [date(2026, 11, d) for d in (1, 2, 3)]
    assert len(history_days("2026-10", _at(date(2026, 11, 27)))) == 31  # a past month: all
    assert history_days("2026-12", _at(date(2026, 11, 27))) == []  # a future month: nothing
    assert len(history_days("2024-02", _at(date(2026, 1, 1)))) == 29


@pytest.mark.parametrize(
    "now",
    [
        datetime(2027, 3, 1, 0, 5, tzinfo=UTC),  # the first minutes of a month
        datetime(2027, 3, 15, 12, 0, tzinfo=UTC),  # the 15th
        datetime(2027, 3, 31, 23, 59, tzinfo=UTC),  # the last day
        datetime(2028, 2, 29, 18, 30, tzinfo=UTC),  # a leap February's last day
        datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC),  # the first seconds of a year
    ],
    ids=lambda d: f"{d:%Y-%m-%dT%H:%M}",
)
def test_nothing_is_planned_at_or_after_now(now: datetime) -> None:
    month = f"{now:%Y-%m}"
    plan = plan_history(SPEC, month, now=now, calls_per_day=40)
    assert all(c.when < now for c in plan)
    assert all(f"{c.when:%Y-%m}" == month for c in plan)
    # the calls before now are those of the whole month's plan: a later clock only adds calls
    whole = plan_history(SPEC, month, now=datetime(2100, 1, 1, tzinfo=UTC), calls_per_day=40)
    assert plan == [c for c in whole if c.when < now]
    if now.day > 1:
        assert plan and {c.when.date() for c in plan} >= {now.date().replace(day=1)}


def test_the_plan_is_deterministic_sorted_and_inside_the_month() -> None:
    a = plan_history(SPEC, "2026-11", now=datetime(2026, 11, 27, tzinfo=UTC))
    b = plan_history(SPEC, "2026-11", now=datetime(2026, 11, 27, tzinfo=UTC))
    assert a == b
    assert a != plan_history(SPEC, "2026-11", now=datetime(2026, 11, 27, tzinfo=UTC), seed=12)
    assert [c.when for c in a] == sorted(c.when for c in a)
    assert all(
        c.when.year == 2026 and c.when.month == 11 and c.when < datetime(2026, 11, 27, tzinfo=UTC)
        for c in a
    )
    assert {c.kind for c in a} == set(CALL_KINDS) == set(KIND_WEIGHTS)


def test_the_plan_has_a_business_week_and_per_bu_volumes() -> None:
    plan = plan_history(SPEC, "2026-10", now=datetime(2026, 11, 27, tzinfo=UTC), calls_per_day=20)
    per_day = Counter(c.when.date() for c in plan)
    weekday = [n for d, n in per_day.items() if d.weekday() < 5]
    weekend = [n for d, n in per_day.items() if d.weekday() >= 5]
    assert sum(weekend) / len(weekend) < 0.4 * sum(weekday) / len(weekday)
    per_bu = Counter(c.subscription for c in plan)
    ids = [s.id for s in SPEC.subscriptions]
    assert per_bu[ids[0]] < per_bu[ids[1]] < per_bu[ids[2]]  # BU_VOLUME 1.0 < 1.7 < 2.6
    embeddings = {c.deployment for c in plan if c.kind == "embeddings"}
    assert embeddings == {"text-embedding-3-small"}
    assert "text-embedding-3-small" not in {c.deployment for c in plan if c.kind != "embeddings"}


def test_bad_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        plan_history(SPEC, "2026-13", now=datetime(2026, 11, 27, tzinfo=UTC))
    with pytest.raises(ConfigError):
        plan_history(SPEC, "2026-11", now=datetime(2026, 11, 27, tzinfo=UTC), calls_per_day=0)
    with pytest.raises(ConfigError):
        drive_history(SPEC, "sqlite://", [])
    stranger = PlannedCall(
        plan_history(SPEC, "2026-11", now=datetime(2026, 11, 27, tzinfo=UTC))[0].when,
        "bu-nobody",
        "chat",
        "gpt-4o",
    )
    with pytest.raises(ConfigError, match="bu-nobody"):
        drive_history(SPEC, "sqlite://", [stranger])


def test_every_planned_call_is_stored_on_its_planned_day(tmp_path: Path) -> None:
    plan = plan_history(
        SPEC, "2026-11", now=datetime(2026, 11, 4, 23, 59, tzinfo=UTC), calls_per_day=2
    )
    db = f"sqlite:///{tmp_path / 'h.db'}"
    result = drive_history(SPEC, db, plan)
    assert len(result.calls) == len(plan) and result.failed == 0
    assert result.stored == result.events == len(plan)
    t = token_table.c
    engine = engine_from_url(db)
    try:
        with transaction(engine) as conn:
            stored = Counter(
                (r.SubscriptionId, r.ExecTimeUTC.date())
                for r in conn.execute(select(t.SubscriptionId, t.ExecTimeUTC))
            )
            tokens = conn.execute(select(func.sum(t.PromptTokens))).scalar_one()
    finally:
        engine.dispose()
    assert stored == Counter((c.subscription, c.when.date()) for c in plan)
    # Business-sized prompts: a pasted document, hundreds of tokens on average.
    assert tokens / len(plan) > 200
