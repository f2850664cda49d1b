"""Demo history: the plan (pure, seeded) and the calls it makes through the real local gateway."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aoai_helpers.exceptions import ConfigError
from aoai_helpers.local.history import (
    KIND_WEIGHTS,
    PlannedCall,
    drive_history,
    history_days,
    plan_history,
)
from aoai_helpers.local.traffic import CALL_KINDS
from aoai_helpers.spec import load_spec
from aoai_helpers.store import engine_from_url, token_table, transaction

SPEC = load_spec(Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml")


def test_days_run_from_the_first_of_the_month_to_today() -> None:
    assert history_days("2026-11", date(2026, 11, 3)) == [date(2026, 11, d) for d in (1, 2, 3)]
    assert len(history_days("2026-10", date(2026, 11, 27))) == 31  # a past month: all of it
    assert history_days("2026-12", date(2026, 11, 27)) == []  # a future month: nothing
    assert len(history_days("2024-02", date(2026, 1, 1))) == 29


def test_the_plan_is_deterministic_sorted_and_inside_the_month() -> None:
    a = plan_history(SPEC, "2026-11", today=date(2026, 11, 27))
    b = plan_history(SPEC, "2026-11", today=date(2026, 11, 27))
    assert a == b
    assert a != plan_history(SPEC, "2026-11", today=date(2026, 11, 27), seed=12)
    assert [c.when for c in a] == sorted(c.when for c in a)
    assert all(c.when.year == 2026 and c.when.month == 11 and c.when.day <= 27 for c in a)
    assert {c.kind for c in a} == set(CALL_KINDS) == set(KIND_WEIGHTS)


def test_the_plan_has_a_business_week_and_per_bu_volumes() -> None:
    plan = plan_history(SPEC, "2026-10", today=date(2026, 11, 27), calls_per_day=20)
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
        plan_history(SPEC, "2026-13", today=date(2026, 11, 27))
    with pytest.raises(ConfigError):
        plan_history(SPEC, "2026-11", today=date(2026, 11, 27), calls_per_day=0)
    with pytest.raises(ConfigError):
        drive_history(SPEC, "sqlite://", [])
    stranger = PlannedCall(
        plan_history(SPEC, "2026-11", today=date(2026, 11, 1))[0].when,
        "bu-nobody",
        "chat",
        "gpt-4o",
    )
    with pytest.raises(ConfigError, match="bu-nobody"):
        drive_history(SPEC, "sqlite://", [stranger])


def test_every_planned_call_is_stored_on_its_planned_day(tmp_path: Path) -> None:
    plan = plan_history(SPEC, "2026-11", today=date(2026, 11, 4), calls_per_day=2)
    db = f"sqlite:///{tmp_path / 'h.db'}"
    result = drive_history(SPEC, db, plan)
    assert len(result.calls) == len(plan) and result.failed == 0
    assert result.stored == result.events == len(plan)
    t = token_table.c
    with transaction(engine_from_url(db)) as conn:
        stored = Counter(
            (r.SubscriptionId, r.ExecTimeUTC.date())
            for r in conn.execute(select(t.SubscriptionId, t.ExecTimeUTC))
        )
        tokens = conn.execute(select(func.sum(t.PromptTokens))).scalar_one()
    assert stored == Counter((c.subscription, c.when.date()) for c in plan)
    # Business-sized prompts: a pasted document, hundreds of tokens on average.
    assert tokens / len(plan) > 200
