"""core/money: exact decimals in each currency's minor units; unpriced is a word, never 0."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aoai_helpers.core.money import (
    UNPRICED,
    format_money,
    minor_units,
    round_money,
    round_parts,
    split_exact,
    sum_money,
    to_decimal,
    xlsx_money_format,
)


@pytest.mark.parametrize(
    ("currency", "places"),
    [("USD", 2), ("eur", 2), ("CNY", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("CLF", 4), (None, 2)],
)
def test_minor_units_follow_iso_4217(currency: str | None, places: int) -> None:
    assert minor_units(currency) == places


def test_a_float_becomes_the_decimal_it_was_written_as() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(0.000002345) == Decimal("0.000002345")
    assert to_decimal(None) is None
    assert sum_money([0.1, 0.2, None]) == Decimal("0.3")  # float 0.1 + 0.2 is 0.30000000000000004
    assert sum_money([None, None]) is None


def test_rounding_is_half_up_in_the_minor_unit() -> None:
    assert round_money("0.005", "USD") == Decimal("0.01")
    assert round_money("2.5", "JPY") == Decimal("3")
    assert round_money(1.0005, "BHD") == Decimal("1.001")


def test_split_adds_up_and_breaks_ties_by_weight_then_order() -> None:
    assert split_exact("10.00", [1, 1, 1], "USD") == [Decimal(x) for x in ("3.34", "3.33", "3.33")]
    assert split_exact("0.02", [1, 3], "USD") == [Decimal("0.00"), Decimal("0.02")]
    assert split_exact("100", [1, 2], "JPY") == [Decimal(33), Decimal(67)]
    assert split_exact(0, [0, 0], "USD") == [Decimal("0.00"), Decimal("0.00")]
    with pytest.raises(ValueError, match="nothing to split"):
        split_exact("1.00", [0, 0], "USD")
    with pytest.raises(ValueError, match="negative"):
        split_exact("1.00", [1, -1], "USD")
    with pytest.raises(ValueError, match="negative total"):
        split_exact("-0.05", [1, 1], "USD")


def test_rounded_parts_add_up_to_the_rounded_total() -> None:
    # three lines of half a cent: rounding each gives 0.03, the total rounds to 0.02
    parts = round_parts([0.005, 0.005, 0.005, None], "USD")
    assert parts[3] is None
    assert sum(p for p in parts if p is not None) == Decimal("0.02")
    assert round_parts([None], "USD") == [None]
    assert round_parts([0.0, 0.0], "USD") == [Decimal("0.00"), Decimal("0.00")]


@given(
    st.lists(
        st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["USD", "JPY", "BHD"]),
)
def test_rounded_parts_always_add_up(values: list[Decimal], currency: str) -> None:
    parts = round_parts(values, currency)
    assert sum(p for p in parts if p is not None) == round_money(sum(values), currency)
    for exact, part in zip(values, parts, strict=True):
        assert part is not None
        assert abs(part - exact) < Decimal(1).scaleb(-minor_units(currency))


def test_formatting_shows_the_minor_units_and_the_word_unpriced() -> None:
    assert format_money(1234.5, "USD") == "1,234.50 USD"
    assert format_money(0.0108, "USD") == "0.01 USD"
    assert format_money(1234.5, "JPY") == "1,235 JPY"
    assert format_money(None, "USD") == UNPRICED == "unpriced"
    assert format_money(Decimal("7"), "EUR", code=False) == "7.00"


def test_xlsx_formats_carry_the_code_and_the_minor_units() -> None:
    assert xlsx_money_format("USD") == '#,##0.00 "USD";-#,##0.00 "USD"'
    assert xlsx_money_format("JPY") == '#,##0 "JPY";-#,##0 "JPY"'
    assert xlsx_money_format(None) == "#,##0.00"
