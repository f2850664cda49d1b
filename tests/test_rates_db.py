"""Tests for aoai_helpers.db.rates: effective-dated rates in the database, repricing, BU map.

Rows are stored the real way: event dicts → JSON → ``Ingestor.ingest_batch``.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select

from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.business_units import BusinessUnit, import_bu_csv, read_bu_map, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.rates import read_rates
from aoai_helpers.db.tables import rate_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.pipeline.reprice import reprice, set_rates
from aoai_helpers.pipeline.service import sample_path

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True

M = 1_000_000
D2024 = datetime(2024, 1, 1)
D2025 = datetime(2025, 1, 1)
NOV = datetime(2026, 11, 1)


def gpt4o(prompt: float, completion: float, start: datetime, **kw) -> Rate:
    """A gpt-4o rate with per-1M prices."""
    return Rate("gpt-4o", prompt / M, completion / M, effective_from=start, **kw)


def rates(engine) -> list[Rate]:
    with transaction(engine) as conn:
        return read_rates(conn)


def put(engine, *new: Rate, reprice_rows: bool = True) -> int:
    with transaction(engine) as conn:
        return set_rates(conn, list(new), reprice_rows=reprice_rows)


def periods(engine, model: str = "gpt-4o") -> list[tuple[datetime, datetime | None, float]]:
    return [
        (r.effective_from, r.effective_to, round(r.prompt_rate * M, 9))
        for r in rates(engine)
        if r.model_name == model
    ]


def costs(token_rows, engine) -> dict[str, tuple[float | None, str | None, int | None]]:
    """Cost, currency and rate id of each row, keyed by the row's ExecTimeUTC (ISO)."""
    return {
        r["ExecTimeUTC"].isoformat(): (r["Cost"], r["Currency"], r["RateId"])
        for r in token_rows(engine)
    }


# ----------------------------------------------------------------------------- set_rates


def test_empty_engine_has_no_rates(empty_engine):
    assert rates(empty_engine) == []


def test_set_rates_inserts(empty_engine):
    new = Rate("gpt-4o", 2.5e-6, 1e-5, 1.25e-6, "USD", D2024, None, "test price")
    assert put(empty_engine, new) == 0  # nothing stored to reprice
    (stored,) = rates(empty_engine)
    assert stored.rate_id is not None
    assert stored == Rate(
        "gpt-4o", 2.5e-6, 1e-5, 1.25e-6, "USD", D2024, None, "test price", stored.rate_id
    )


def test_later_rate_closes_the_open_one(empty_engine):
    put(empty_engine, gpt4o(2.5, 10, D2024))
    put(empty_engine, gpt4o(2.0, 8, D2025))
    assert periods(empty_engine) == [(D2024, D2025, 2.5), (D2025, None, 2.0)]


def test_rate_inserted_between_two_rates(empty_engine):
    put(empty_engine, gpt4o(2.5, 10, D2024), gpt4o(1.0, 4, datetime(2026, 1, 1)))
    put(empty_engine, gpt4o(2.0, 8, D2025))
    assert periods(empty_engine) == [
        (D2024, D2025, 2.5),
        (D2025, datetime(2026, 1, 1), 2.0),
        (datetime(2026, 1, 1), None, 1.0),
    ]


def test_rate_before_existing_ends_at_its_start(empty_engine):
    put(empty_engine, gpt4o(2.0, 8, D2025))
    put(empty_engine, gpt4o(2.5, 10, D2024))
    assert periods(empty_engine) == [(D2024, D2025, 2.5), (D2025, None, 2.0)]


def test_same_start_updates_in_place(empty_engine):
    put(empty_engine, gpt4o(2.5, 10, D2024))
    (before,) = rates(empty_engine)
    put(empty_engine, Rate("gpt-4o", 3e-6, 12e-6, None, "EUR", D2024, None, "renegotiated"))
    (after,) = rates(empty_engine)
    assert after.rate_id == before.rate_id
    assert (after.prompt_rate, after.completion_rate, after.currency, after.source) == (
        3e-6,
        12e-6,
        "EUR",
        "renegotiated",
    )
    with transaction(empty_engine) as conn:
        assert conn.execute(select(func.count()).select_from(rate_table)).scalar() == 1


def test_rates_of_other_models_are_untouched(empty_engine):
    put(empty_engine, gpt4o(2.5, 10, D2024), Rate("o3", 2e-6, 8e-6, effective_from=D2024))
    put(empty_engine, gpt4o(2.0, 8, D2025))
    assert periods(empty_engine, "o3") == [(D2024, None, 2.0)]


def test_overlapping_explicit_end_raises_and_rolls_back(empty_engine):
    put(empty_engine, gpt4o(1.0, 4, datetime(2026, 1, 1)))
    with pytest.raises(ConfigError, match="overlapping rates for gpt-4o"):
        put(empty_engine, gpt4o(2.5, 10, D2024, effective_to=datetime(2026, 6, 1)))
    assert periods(empty_engine) == [(datetime(2026, 1, 1), None, 1.0)]


# ----------------------------------------------------------------------------- repricing


def test_rows_are_repriced_when_a_rate_changes(empty_engine, make_v2, ingest_events, token_rows):
    put(empty_engine, gpt4o(2.5, 10, D2024))
    result = ingest_events(
        empty_engine,
        make_v2(ExecTimeUTC="2026-10-15T08:00:00.000Z"),
        make_v2(ExecTimeUTC="2026-11-05T10:00:00.123Z"),
    )
    assert result.stored == 2
    old_id = rates(empty_engine)[0].rate_id
    # 100 prompt * 2.5e-6 + 50 completion * 1e-5
    assert costs(token_rows, empty_engine) == {
        "2026-10-15T08:00:00": (pytest.approx(0.00075, rel=1e-12), "USD", old_id),
        "2026-11-05T10:00:00.123000": (pytest.approx(0.00075, rel=1e-12), "USD", old_id),
    }

    repriced = put(empty_engine, gpt4o(5.0, 20, NOV))
    assert repriced == 1
    new_id = next(r.rate_id for r in rates(empty_engine) if r.effective_from == NOV)
    # only the November row: 100 * 5e-6 + 50 * 2e-5
    assert costs(token_rows, empty_engine) == {
        "2026-10-15T08:00:00": (pytest.approx(0.00075, rel=1e-12), "USD", old_id),
        "2026-11-05T10:00:00.123000": (pytest.approx(0.0015, rel=1e-12), "USD", new_id),
    }


def test_same_start_update_reprices_rows(empty_engine, make_v2, ingest_events, token_rows):
    put(empty_engine, gpt4o(2.5, 10, D2024))
    ingest_events(empty_engine, make_v2())
    assert put(empty_engine, Rate("gpt-4o", 1e-6, 2e-6, 5e-7, "EUR", D2024)) == 1
    (row,) = token_rows(empty_engine)
    assert row["Cost"] == pytest.approx(100 * 1e-6 + 50 * 2e-6, rel=1e-12)
    assert row["Currency"] == "EUR"


def test_cached_tokens_repriced_at_cached_rate(empty_engine, make_v2, ingest_events, token_rows):
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 100,
        "total_tokens": 2100,
        "cached_tokens": 1024,
        "reasoning_tokens": 0,
    }
    ingest_events(empty_engine, make_v2(Usage=usage))
    put(empty_engine, Rate("gpt-4o", 2.5e-6, 10e-6, 1.25e-6, effective_from=D2024))
    (row,) = token_rows(empty_engine)
    assert row["Cost"] == pytest.approx(0.00472, rel=1e-12)


def test_unpriced_rows_become_priced(empty_engine, make_v2, ingest_events, token_rows):
    result = ingest_events(empty_engine, make_v2(), make_v2(Model="gpt-4.1-mini-2025-04-14"))
    assert result.stored == 2
    assert result.unpriced == 2
    assert [
        (r["ModelName"], r["Cost"], r["Currency"], r["RateId"]) for r in token_rows(empty_engine)
    ] == [
        ("gpt-4o", None, None, None),
        ("gpt-4.1-mini", None, None, None),
    ]
    assert put(empty_engine, gpt4o(2.5, 10, D2024)) == 1
    rows = token_rows(empty_engine)
    assert rows[0]["Cost"] == pytest.approx(0.00075, rel=1e-12)
    assert rows[0]["Currency"] == "USD"
    assert rows[0]["RateId"] == rates(empty_engine)[0].rate_id
    assert rows[1]["Cost"] is None  # still no gpt-4.1-mini rate: unpriced, not free


def test_rate_starting_after_the_call_leaves_it_unpriced(
    empty_engine, make_v2, ingest_events, token_rows
):
    ingest_events(empty_engine, make_v2(ExecTimeUTC="2026-10-31T23:59:59.999Z"))
    assert put(empty_engine, gpt4o(2.5, 10, NOV)) == 0
    assert token_rows(empty_engine)[0]["Cost"] is None


def test_unbilled_rows_keep_zero_cost(empty_engine, make_v2, ingest_events, token_rows):
    ingest_events(empty_engine, make_v2(StatusCode=429, Usage=None))
    (row,) = token_rows(empty_engine)
    assert (row["UsageSource"], row["Cost"], row["PromptTokens"], row["StatusCode"]) == (
        "unbilled",
        0.0,
        0,
        429,
    )
    assert put(empty_engine, gpt4o(2.5, 10, D2024)) == 0
    with transaction(empty_engine) as conn:
        assert reprice(conn) == 0
    (row,) = token_rows(empty_engine)
    assert (row["Cost"], row["Currency"], row["RateId"]) == (0.0, None, None)


def test_reprice_only_touches_its_window(empty_engine, make_v2, ingest_events, token_rows):
    ingest_events(
        empty_engine,
        make_v2(ExecTimeUTC="2026-10-20T00:00:00.000Z"),
        make_v2(ExecTimeUTC="2026-11-01T00:00:00.000Z"),
        make_v2(ExecTimeUTC="2026-11-20T00:00:00.000Z"),
        make_v2(ExecTimeUTC="2026-11-20T00:00:00.000Z", Model="gpt-4.1-mini"),
    )
    put(
        empty_engine,
        gpt4o(2.5, 10, D2024),
        Rate("gpt-4.1-mini", 0.4 / M, 1.6 / M, effective_from=D2024),
        reprice_rows=False,
    )
    assert [r["Cost"] for r in token_rows(empty_engine)] == [None, None, None, None]

    with transaction(empty_engine) as conn:
        assert reprice(conn, model="gpt-4o", start=NOV) == 2
    assert [r["Cost"] for r in token_rows(empty_engine)] == [
        None,
        pytest.approx(0.00075, rel=1e-12),
        pytest.approx(0.00075, rel=1e-12),
        None,
    ]

    with transaction(empty_engine) as conn:
        assert reprice(conn, end=datetime(2026, 11, 1)) == 1  # end is exclusive
    assert [r["Cost"] for r in token_rows(empty_engine)] == [
        pytest.approx(0.00075, rel=1e-12),
        pytest.approx(0.00075, rel=1e-12),
        pytest.approx(0.00075, rel=1e-12),
        None,
    ]

    with transaction(empty_engine) as conn:
        assert reprice(conn) == 4
    # 100 * 0.4e-6 + 50 * 1.6e-6
    assert token_rows(empty_engine)[3]["Cost"] == pytest.approx(0.00012, rel=1e-12)


def test_closing_a_rate_in_place_unprices_the_rows_it_no_longer_covers(
    empty_engine, make_v2, ingest_events, token_rows
):
    put(empty_engine, gpt4o(2.5, 10, D2024))
    ingest_events(empty_engine, make_v2(ExecTimeUTC="2026-11-05T10:00:00.000Z"))
    put(
        empty_engine, gpt4o(2.5, 10, D2024, effective_to=datetime(2026, 1, 1))
    )  # same start, now closed
    (row,) = token_rows(empty_engine)
    assert (row["Cost"], row["RateId"]) == (None, None)


def test_a_rate_window_inside_an_open_rate_lets_the_old_rate_resume(
    empty_engine, make_v2, ingest_events, token_rows
):
    """A promotion from 2025 to 2026: the open 2024 rate is split around it, no gap appears."""
    put(empty_engine, gpt4o(2.5, 10, D2024))
    ingest_events(
        empty_engine,
        make_v2(ExecTimeUTC="2025-06-01T10:00:00.000Z"),  # inside the window
        make_v2(ExecTimeUTC="2026-11-05T10:00:00.000Z"),  # after it: the old rate again
    )
    put(empty_engine, gpt4o(5.0, 20, D2025, effective_to=datetime(2026, 1, 1)))
    assert periods(empty_engine) == [
        (D2024, D2025, 2.5),
        (D2025, datetime(2026, 1, 1), 5.0),
        (datetime(2026, 1, 1), None, 2.5),
    ]
    inside, after = sorted(token_rows(empty_engine), key=lambda r: r["ExecTimeUTC"])
    # 100 prompt + 50 completion tokens
    assert inside["Cost"] == pytest.approx(100 * 5.0 / M + 50 * 20 / M, rel=1e-12)
    assert after["Cost"] == pytest.approx(100 * 2.5 / M + 50 * 10 / M, rel=1e-12)
    assert after["RateId"] not in (None, inside["RateId"])


# ----------------------------------------------------------------------------- BU map


def test_set_and_read_bu_map(empty_engine):
    units = [
        BusinessUnit("sub-b", "R&D", "rnd-search", "CC-4100", 120.0),
        BusinessUnit("sub-a", "R&D", "rnd-copilot", "CC-4100", None),
        BusinessUnit("sub-c", "Finance"),
    ]
    with transaction(empty_engine) as conn:
        assert set_bu(conn, units) == 3
    with transaction(empty_engine) as conn:
        assert read_bu_map(conn) == [
            BusinessUnit("sub-c", "Finance", None, None, None),
            BusinessUnit("sub-a", "R&D", "rnd-copilot", "CC-4100", None),
            BusinessUnit("sub-b", "R&D", "rnd-search", "CC-4100", 120.0),
        ]


def test_set_bu_replaces_existing_mapping(empty_engine):
    with transaction(empty_engine) as conn:
        set_bu(
            conn,
            [BusinessUnit("sub-a", "R&D", "rnd", "CC-1", 10.0), BusinessUnit("sub-b", "Legal")],
        )
    with transaction(empty_engine) as conn:
        assert set_bu(conn, [BusinessUnit("sub-a", "Finance", None, "CC-9")]) == 1
    with transaction(empty_engine) as conn:
        assert read_bu_map(conn) == [
            BusinessUnit("sub-a", "Finance", None, "CC-9", None),
            BusinessUnit("sub-b", "Legal"),
        ]


def test_set_bu_empty_is_noop(empty_engine):
    with transaction(empty_engine) as conn:
        assert set_bu(conn, []) == 0
        assert read_bu_map(conn) == []


@pytest.mark.parametrize(
    "unit", [BusinessUnit("", "Finance"), BusinessUnit("sub-a", "  "), BusinessUnit(" ", "")]
)
def test_set_bu_requires_id_and_unit(empty_engine, unit):
    with (
        transaction(empty_engine) as conn,
        pytest.raises(ConfigError, match="needs a subscription id"),
    ):
        set_bu(conn, [BusinessUnit("sub-ok", "Legal"), unit])
    with transaction(empty_engine) as conn:
        assert read_bu_map(conn) == []  # validated before anything was written


def test_duplicate_subscription_in_bu_csv_is_a_config_error(empty_engine):
    text = "subscription_id,business_unit\nsub-a,R&D\nsub-a,Legal\n"
    with pytest.raises(ConfigError), transaction(empty_engine) as conn:
        set_bu(conn, import_bu_csv(text))


def test_import_bu_csv_sample():
    units = import_bu_csv(sample_path("sample_bu.csv").read_text("utf-8"))
    assert units == [
        BusinessUnit("sub-finance-01", "Finance", "finance-analytics", "CC-1100", 0.25),
        BusinessUnit("sub-marketing-01", "Marketing", "marketing-content", "CC-2300", 0.20),
        BusinessUnit("sub-rnd-01", "R&D", "rnd-copilot", "CC-4100", 0.30),
        BusinessUnit("sub-rnd-02", "R&D", "rnd-search", "CC-4100", 0.20),
        BusinessUnit("sub-legal-01", "Legal", "legal-review", "CC-5200", None),
    ]


def test_import_bu_csv_minimal_columns_bom_and_blank_rows():
    text = "\ufeffsubscription_id, business_unit\n sub-a , Finance \n,\n\nsub-b,Legal\n"
    assert import_bu_csv(text) == [
        BusinessUnit("sub-a", "Finance", None, None, None),
        BusinessUnit("sub-b", "Legal", None, None, None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sub,bu\nsub-a,Finance\n", "BU CSV needs a header with subscription_id,business_unit"),
        ("", "BU CSV needs a header"),
        ("subscription_id\nsub-a\n", "BU CSV needs a header"),
        (
            "subscription_id,business_unit\nsub-a,Finance\nsub-b,\n",
            "BU CSV line 3: subscription_id and business_unit are required",
        ),
        (
            "subscription_id,business_unit\n,Finance\n",
            "BU CSV line 2: subscription_id and business_unit are required",
        ),
        (
            "subscription_id,business_unit,monthly_budget\nsub-a,Finance,lots\n",
            "BU CSV line 2: monthly_budget is not a number: 'lots'",
        ),
    ],
)
def test_import_bu_csv_errors(text, message):
    with pytest.raises(ConfigError) as info:
        import_bu_csv(text)
    assert str(info.value).startswith(message), str(info.value)


def test_import_bu_csv_line_number_after_blank_line():
    text = "subscription_id,business_unit\nsub-a,Finance\n\nsub-b,\n"  # bad row is line 4
    with pytest.raises(ConfigError, match="BU CSV line 4:"):
        import_bu_csv(text)


def test_import_then_set_bu(empty_engine):
    units = import_bu_csv(sample_path("sample_bu.csv").read_text("utf-8"))
    with transaction(empty_engine) as conn:
        assert set_bu(conn, units) == 5
    with transaction(empty_engine) as conn:
        assert [u.subscription_id for u in read_bu_map(conn)] == [
            "sub-finance-01",
            "sub-legal-01",
            "sub-marketing-01",
            "sub-rnd-01",
            "sub-rnd-02",
        ]
