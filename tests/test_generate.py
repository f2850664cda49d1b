"""Tests for aoai_helpers.synthetic.rows: synthetic months written straight into the database.

Determinism and idempotence (same seed → same rows, a rerun stores nothing), pricing that
agrees with ingest's (a reprice after generating changes no cost), and the shape of the
traffic (weekdays, office hours, the shares of streamed, estimated, unpriced and throttled
calls) on a few thousand rows.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from cli_run import run_cli
from sqlalchemy import func, select

from aoai_helpers.analysis.report import chargeback_by_bu, unpriced_models
from aoai_helpers.config import spec_path
from aoai_helpers.core.pricing import RateBook, default_rates
from aoai_helpers.db.business_units import read_bu_map
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pipeline.ingest import ROW_COLUMNS
from aoai_helpers.pipeline.reprice import reprice
from aoai_helpers.spec import load_spec
from aoai_helpers.synthetic.rows import (
    UNPRICED_DEPLOYMENT,
    generate,
    hour_counts,
    make_profile,
    synthetic_rows,
)

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

SPEC = load_spec(spec_path())
STAMP = datetime(2026, 12, 1)
RATES = RateBook(default_rates())
COL = {name: i for i, name in enumerate(ROW_COLUMNS)}


def rows(count: int, seed: int = 0, month: str = "2026-11") -> list[tuple]:
    return list(synthetic_rows(make_profile(SPEC, month, seed), RATES, count, stamp=STAMP))


def test_hour_counts_add_up_and_follow_the_week():
    profile = make_profile(SPEC, "2026-11")
    counts = hour_counts(profile, 100_003)
    assert sum(counts) == 100_003 and len(counts) == 30 * 24
    assert sum(hour_counts(profile, 7)) == 7 and sum(hour_counts(profile, 0)) == 0
    per_day = [sum(counts[d * 24 : d * 24 + 24]) for d in range(30)]
    weekend = [per_day[d] for d in range(30) if datetime(2026, 11, d + 1).weekday() >= 5]
    weekday = [per_day[d] for d in range(30) if datetime(2026, 11, d + 1).weekday() < 5]
    ratio = (sum(weekday) / len(weekday)) / (sum(weekend) / len(weekend))
    assert 3 < ratio < 5.5  # weekdays ~4x busier
    by_hour = [sum(counts[d * 24 + h] for d in range(30)) for h in range(24)]
    assert min(by_hour[9:11]) > 8 * max(by_hour[0:4])  # office hours, quiet nights
    assert len(hour_counts(make_profile(SPEC, "2026-02"), 10)) == 28 * 24


def test_rows_are_deterministic_and_in_time_order():
    a, b = rows(3000), rows(3000)
    assert a == b
    assert rows(3000, seed=1) != a
    times = [r[COL["ExecTimeUTC"]] for r in a]
    assert times == sorted(times)
    assert all(datetime(2026, 11, 1) <= t < datetime(2026, 12, 1) for t in times)
    assert all(r[COL["ExecDateUTC"]] == t.replace(hour=0, minute=0, second=0, microsecond=0)
               for r, t in zip(a, times, strict=True))  # fmt: skip
    ids = [r[COL["RequestId"]] for r in a]
    assert len(set(ids)) == len(ids) and all(i.startswith("gen:0:2026-11:") for i in ids)
    assert all(len(i) <= 64 for i in ids)
    assert {r[COL["RequestId"]] for r in rows(50, month="2026-10")}.isdisjoint(ids)


def test_row_layout_is_ingests():
    (first,) = rows(1)
    row = dict(zip(ROW_COLUMNS, first, strict=True))
    sub = next(s for s in SPEC.subscriptions if s.id == row["SubscriptionId"])
    assert row["SubscriptionName"] == sub.display_name
    assert (row["GatewayRegion"], row["GatewayServiceName"]) == (
        SPEC.apim.region,
        SPEC.apim.service_name,
    )
    assert (row["ProductName"], row["ApiName"]) == (
        SPEC.product.display_name,
        SPEC.apim.api_display_name,
    )
    assert row["UserEmail"].endswith(".example.com") and " " in row["UserName"]
    assert row["DeploymentName"] in {*SPEC.deployment_models(), UNPRICED_DEPLOYMENT[0]}
    assert (row["EventVersion"], row["ApiVersion"]) == (2, SPEC.apim.api_version)
    assert row["IngestedAtUTC"] == STAMP and row["IsStreaming"] in (0, 1)


def test_a_row_is_the_same_call_whatever_the_count():
    small = {r[COL["RequestId"]]: r for r in rows(2000)}
    large = {r[COL["RequestId"]]: r for r in rows(5000)}
    common = small.keys() & large.keys()
    assert len(common) > 1900  # each hour's first rows (largest-remainder rounding aside)
    assert all(small[k] == large[k] for k in common)


def test_rows_look_like_ingested_calls():
    sample = rows(20_000)
    n = len(sample)

    def share(pred) -> float:
        return sum(1 for r in sample if pred(r)) / n

    c = COL
    subs = Counter(r[c["SubscriptionId"]] for r in sample)
    assert set(subs) == {s.id for s in SPEC.subscriptions}
    assert min(subs.values()) > 0.05 * n
    models = {r[c["DeploymentName"]] for r in sample}
    assert models == {*SPEC.deployment_models(), UNPRICED_DEPLOYMENT[0]}
    assert 0.005 < share(lambda r: r[c["Cost"]] is None) < 0.04  # unpriced: a few %
    assert all(r[c["ModelName"]] == "contoso-support-ft" for r in sample if r[c["Cost"]] is None)
    assert 0.01 < share(lambda r: r[c["UsageSource"]] in ("estimated", "prompt_only")) < 0.08
    assert 0.2 < share(lambda r: r[c["IsStreaming"]]) < 0.45
    assert 0.01 < share(lambda r: r[c["StatusCode"]] == 429) < 0.03
    assert 0.03 < share(lambda r: r[c["CachedTokens"]] > 0) < 0.3
    assert {r[c["Operation"]] for r in sample} == {"chat", "responses", "completions", "embeddings"}
    for r in sample:
        assert r[c["TotalTokens"]] == r[c["PromptTokens"]] + r[c["CompletionTokens"]]
        assert r[c["CachedTokens"]] <= r[c["PromptTokens"]]
        if r[c["UsageSource"]] == "unbilled":
            assert (r[c["Cost"]], r[c["Currency"]], r[c["TotalTokens"]]) == (0.0, None, 0)
            assert r[c["StatusCode"]] != 200
        if r[c["UsageSource"]] == "prompt_only":
            assert r[c["CompletionTokens"]] == 0 and r[c["EstimateEncoding"]] == "o200k_base"
        if r[c["Operation"]] == "embeddings":
            assert r[c["CompletionTokens"]] == 0 and not r[c["IsStreaming"]]
    users = Counter((r[c["SubscriptionId"]], r[c["UserEmail"]]) for r in sample)
    assert len(users) > 3 * len(SPEC.subscriptions)


def _count(engine) -> int:
    with transaction(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(token_table)).scalar_one())


def test_generate_is_idempotent_and_tops_up(engine):
    seen = []
    first = generate(
        engine, SPEC, rows=3000, month="2026-11", batch_size=1000, progress=seen.append, workers=0
    )
    assert (first.requested, first.stored, first.skipped) == (3000, 3000, 0)
    assert [p.done for p in seen] == [1000, 2000, 3000] and seen[-1].stored == 3000
    assert _count(engine) == 3000
    assert sorted(first.mapped) == sorted(s.id for s in SPEC.subscriptions)
    again = generate(engine, SPEC, rows=3000, month="2026-11", workers=0)
    assert (again.stored, again.skipped, again.mapped) == (0, 3000, [])
    more = generate(engine, SPEC, rows=4000, month="2026-11", workers=0)
    assert 990 <= more.stored <= 1010  # each hour topped up to its new share
    other = generate(engine, SPEC, rows=500, month="2026-11", seed=7, workers=0)
    assert other.stored == 500
    assert "3,000 rows for 2026-11 (seed 0): 3,000 stored, 0 already there" in first.summary()


def test_generated_costs_are_what_ingest_would_charge(engine):
    generate(engine, SPEC, rows=4000, month="2026-11", workers=0)
    t = token_table.c
    totals = select(func.sum(t.Cost), func.count(t.Cost), func.count())
    with transaction(engine) as conn:
        before = conn.execute(totals).one()
        reprice(conn)  # ingest's pricing code, from the stored rates, row by row
        after = conn.execute(totals).one()
    assert after[1:] == before[1:]
    assert after[0] == pytest.approx(before[0], rel=1e-12)
    assert unpriced_models(engine, "2026-11") == [("contoso-support-ft", before[2] - before[1])]


def test_business_units_and_budgets(engine):
    generate(engine, SPEC, rows=5000, month="2026-11", workers=0)
    with transaction(engine) as conn:
        units = {u.subscription_id: u for u in read_bu_map(conn)}
    for sub in SPEC.subscriptions:
        unit = units[sub.id]
        assert (unit.business_unit, unit.cost_centre) == (sub.business_unit, sub.cost_center)
        assert unit.monthly_budget is not None and unit.monthly_budget > 0
    charges = chargeback_by_bu(engine, "2026-11")
    assert {c.business_unit for c in charges} == {s.business_unit for s in SPEC.subscriptions}
    assert sum(c.calls for c in charges) == 5000


@pytest.mark.sqlite_only
def test_worker_process_writes_the_same_rows(tmp_path):
    from aoai_helpers.db.engine import engine_from_url
    from aoai_helpers.pipeline.service import ensure_db

    engines = []
    for name, workers in (("in.db", 0), ("pool.db", 1)):
        engine = engine_from_url(f"sqlite:///{tmp_path / name}")
        ensure_db(engine)
        generate(engine, SPEC, rows=2500, month="2026-02", seed=3, workers=workers)
        engines.append(engine)
    columns = [c for c in token_table.c if c.name not in ("Id", "IngestedAtUTC")]
    query = select(*columns).order_by(token_table.c.RequestId)
    with transaction(engines[0]) as a, transaction(engines[1]) as b:
        assert a.execute(query).all() == b.execute(query).all()
    for engine in engines:
        engine.dispose()


def test_bad_arguments(engine):
    with pytest.raises(ConfigError, match="month must look like"):
        generate(engine, SPEC, rows=10, month="2026-13")
    with pytest.raises(ConfigError, match="negative"):
        generate(engine, SPEC, rows=-1, month="2026-11")
    with pytest.raises(ConfigError, match="seed must be"):
        generate(engine, SPEC, rows=1, month="2026-11", seed=2**63)
    assert _count(engine) == 0


@pytest.mark.sqlite_only
def test_cli_generate(tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    done = run_cli("local", "generate", "--rows", "1500", "--month", "2026-11", "--db", db)
    assert done.returncode == 0, done.stderr
    assert "1,500 rows for 2026-11 (seed 0): 1,500 stored, 0 already there" in done.stdout
    assert "1,500/1,500 rows" in done.stderr  # the progress line
    assert f"report --month 2026-11 --db {db}" in done.stdout
    report = run_cli("report", "--month", "2026-11", "--db", db)
    assert report.returncode == 0 and "Finance" in report.stdout
    bad = run_cli("local", "generate", "--rows", "10", "--month", "11/2026", "--db", db)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "month must look like" in bad.stderr and "Traceback" not in bad.stderr
    neg = run_cli("local", "generate", "--rows", "-5", "--db", db)
    assert neg.returncode == 2 and "at least 0" in neg.stderr
