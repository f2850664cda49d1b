"""Tests for aoai_helpers.core.pricing: cost arithmetic, effective dating, CSV import/export, defaults.

Costs use per-token rates that are exact binary fractions where the test asserts ``==``, so
the arithmetic is checked exactly; realistic per-1M prices are compared with ``rel=1e-12``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from aoai_helpers.core.events import Usage
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.pricing import (
    DEFAULT_RATES_AS_OF,
    EPOCH,
    Rate,
    RateBook,
    cost_of,
    default_rates,
    parse_rates_csv,
    rates_to_csv,
)
from aoai_helpers.exceptions import ConfigError

HEADER = "model,input_per_1m,cached_input_per_1m,output_per_1m,currency,effective_from,effective_to,source\n"
US = timedelta(microseconds=1)

# ----------------------------------------------------------------------------- cost_of


def test_cost_with_cached_tokens_at_cached_rate():
    rate = Rate("m", prompt_rate=0.5, completion_rate=2.0, cached_prompt_rate=0.25)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500, cached_tokens=200)
    # 800 uncached * 0.5 + 200 cached * 0.25 + 500 * 2.0
    assert cost_of(usage, rate) == 1450.0


def test_cost_cached_rate_none_uses_prompt_rate():
    rate = Rate("m", prompt_rate=0.5, completion_rate=2.0, cached_prompt_rate=None)
    usage = Usage(1000, 500, 1500, cached_tokens=200)
    assert cost_of(usage, rate) == 1000 * 0.5 + 500 * 2.0 == 1500.0


def test_cost_cached_more_than_prompt_is_clamped():
    rate = Rate("m", prompt_rate=0.5, completion_rate=2.0, cached_prompt_rate=0.25)
    usage = Usage(100, 10, 110, cached_tokens=500)
    # all 100 prompt tokens at the cached rate, never a negative uncached count
    assert cost_of(usage, rate) == 100 * 0.25 + 10 * 2.0 == 45.0


def test_cost_reasoning_tokens_are_part_of_completion():
    rate = Rate("m", prompt_rate=0.5, completion_rate=2.0)
    with_reasoning = Usage(10, 40, 50, reasoning_tokens=30)
    assert cost_of(with_reasoning, rate) == 10 * 0.5 + 40 * 2.0 == 85.0


def test_cost_zero_usage_is_zero():
    assert cost_of(Usage(), Rate("m", 0.5, 2.0, 0.25)) == 0.0


def test_cost_realistic_gpt4o_prices():
    rate = Rate("gpt-4o", 2.50e-6, 10.00e-6, 1.25e-6)
    usage = Usage(2000, 100, 2100, cached_tokens=1024)
    # 976 * 2.5e-6 + 1024 * 1.25e-6 + 100 * 1e-5 = 0.00244 + 0.00128 + 0.001
    assert cost_of(usage, rate) == pytest.approx(0.00472, rel=1e-12)


# ----------------------------------------------------------------------------- RateBook

A = Rate("gpt-4o", 0.5, 2.0, effective_from=datetime(2025, 1, 1), effective_to=datetime(2025, 6, 1))
B = Rate("gpt-4o", 0.25, 1.0, effective_from=datetime(2025, 6, 1))


def test_lookup_effective_dating_boundaries():
    book = RateBook([B, A])  # order of input does not matter
    assert book.lookup("gpt-4o", datetime(2025, 1, 1) - US) is None  # before the first rate
    assert book.lookup("gpt-4o", datetime(2025, 1, 1)) == A  # from is inclusive
    assert book.lookup("gpt-4o", datetime(2025, 3, 15, 12)) == A
    assert book.lookup("gpt-4o", datetime(2025, 6, 1) - US) == A
    assert book.lookup("gpt-4o", datetime(2025, 6, 1)) == B  # to is exclusive
    assert book.lookup("gpt-4o", datetime(2099, 1, 1)) == B  # open-ended


def test_lookup_unknown_model_is_none():
    book = RateBook([A, B])
    assert book.lookup("gpt-4o-mini", datetime(2025, 3, 1)) is None
    assert book.lookup("", datetime(2025, 3, 1)) is None


def test_lookup_in_a_gap_is_none():
    early = Rate(
        "m", 1.0, 1.0, effective_from=datetime(2025, 1, 1), effective_to=datetime(2025, 2, 1)
    )
    late = Rate("m", 2.0, 2.0, effective_from=datetime(2025, 3, 1))
    book = RateBook([early, late])
    assert book.lookup("m", datetime(2025, 2, 1)) is None
    assert book.lookup("m", datetime(2025, 2, 28, 23, 59)) is None
    assert book.lookup("m", datetime(2025, 3, 1)) == late


def test_lookup_closed_last_rate_ends():
    book = RateBook([A])
    assert book.lookup("gpt-4o", datetime(2025, 6, 1)) is None


def test_book_len_and_models():
    other = Rate("o3", 1.0, 1.0)
    book = RateBook([A, B, other])
    assert len(book) == 3
    assert book.models() == ["gpt-4o", "o3"]
    assert len(RateBook([])) == 0


def test_overlap_open_rate_then_later_raises():
    first = Rate("gpt-4o", 1.0, 1.0, effective_from=datetime(2025, 1, 1))
    with pytest.raises(
        ConfigError, match="overlapping rates for gpt-4o: 2025-01-01 and 2025-06-01"
    ):
        RateBook([first, B])


def test_overlap_closed_after_next_start_raises():
    first = Rate(
        "gpt-4o", 1.0, 1.0, effective_from=datetime(2025, 1, 1), effective_to=datetime(2025, 6, 2)
    )
    with pytest.raises(ConfigError, match="overlapping"):
        RateBook([B, first])


def test_same_start_twice_raises():
    with pytest.raises(ConfigError, match="overlapping"):
        RateBook([B, Rate("gpt-4o", 9.0, 9.0, effective_from=datetime(2025, 6, 1))])


def test_open_rates_of_different_models_do_not_overlap():
    book = RateBook([B, Rate("o3", 1.0, 1.0, effective_from=datetime(2025, 6, 1))])
    assert book.lookup("o3", datetime(2025, 7, 1)).model_name == "o3"


def test_rate_covers():
    assert A.covers(datetime(2025, 1, 1))
    assert not A.covers(datetime(2025, 6, 1))
    assert Rate("m", 1, 1).covers(EPOCH)
    assert not Rate("m", 1, 1).covers(EPOCH - US)


# ----------------------------------------------------------------------------- parse_rates_csv


def test_parse_per_million():
    text = HEADER + "gpt-4o-2024-11-20,2.50,1.25,10.00,usd,2025-01-01,2026-01-01,agreement 42\n"
    assert parse_rates_csv(text) == [
        Rate(
            model_name="gpt-4o",
            prompt_rate=2.50 / 1_000_000,
            completion_rate=10.00 / 1_000_000,
            cached_prompt_rate=1.25 / 1_000_000,
            currency="USD",
            effective_from=datetime(2025, 1, 1),
            effective_to=datetime(2026, 1, 1),
            source="agreement 42",
        )
    ]


def test_parse_per_million_defaults():
    text = "model,input_per_1m,output_per_1m\ntext-embedding-3-small,0.02,\n"
    (rate,) = parse_rates_csv(text, default_source="imported")
    assert rate == Rate(
        "text-embedding-3-small",
        prompt_rate=0.02 / 1_000_000,
        completion_rate=0.0,
        cached_prompt_rate=None,
        currency="USD",
        effective_from=EPOCH,
        effective_to=None,
        source="imported",
    )


def test_parse_original_per_token_header():
    text = (
        "ModelName,PromptTokenRate,CompletionTokenRate\n"
        "gpt-35-turbo-0613,0.0000015,0.000002\n"
        "gpt-4,3E-05,6E-05\n"
    )
    assert parse_rates_csv(text) == [
        Rate("gpt-35-turbo", 1.5e-06, 2e-06, None, "USD", EPOCH, None, ""),
        Rate("gpt-4", 3e-05, 6e-05, None, "USD", EPOCH, None, ""),
    ]


def test_parse_per_token_with_cached_and_dates():
    text = (
        "ModelName,PromptTokenRate,CachedPromptTokenRate,CompletionTokenRate,Currency,"
        "EffectiveFrom,EffectiveTo,Source\n"
        "GPT-4o,0.0000025,0.00000125,0.00001,EUR,2025-02-01,,sheet\n"
    )
    assert parse_rates_csv(text) == [
        Rate("gpt-4o", 2.5e-06, 1e-05, 1.25e-06, "EUR", datetime(2025, 2, 1), None, "sheet")
    ]


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("azure/GPT-4o", "gpt-4o"),
        ("gpt-3.5-turbo-16k", "gpt-35-turbo-16k"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("  o4-mini-2025-04-16  ", "o4-mini"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
    ],
)
def test_parse_normalises_model_names(raw, name):
    (rate,) = parse_rates_csv(f"model,input_per_1m,output_per_1m\n{raw},1,2\n")
    assert rate.model_name == name


def test_parse_skips_blank_rows_and_bom_and_dash():
    text = "\ufeff" + HEADER + "\n,,,,,,,\ngpt-4o,2.5,-,10,USD,,,\n"
    (rate,) = parse_rates_csv(text)
    assert rate.model_name == "gpt-4o"
    assert rate.cached_prompt_rate is None


def test_parse_empty_body_is_no_rates():
    assert parse_rates_csv(HEADER) == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("gpt-4o,abc,,10,USD,,,", "rates line 3: input_per_1m is not a number: 'abc'"),
        ("gpt-4o,2.5,x,10,USD,,,", "rates line 3: cached_input_per_1m is not a number: 'x'"),
        ("gpt-4o,-2.5,,10,USD,,,", "rates line 3: input_per_1m must be a non-negative number"),
        ("gpt-4o,2.5,,-1,USD,,,", "rates line 3: output_per_1m must be a non-negative number"),
        ("gpt-4o,nan,,10,USD,,,", "rates line 3: input_per_1m must be a non-negative number"),
        ("gpt-4o,inf,,10,USD,,,", "rates line 3: input_per_1m must be a non-negative number"),
        ("gpt-4o,,,10,USD,,,", "rates line 3: input_per_1m is required"),
        (",2.5,,10,USD,,,", "rates line 3: model is empty"),
        ("gpt-4o,2.5,,10,US,,,", "rates line 3: currency must be a 3-letter code, not 'US'"),
        ("gpt-4o,2.5,,10,US1,,,", "rates line 3: currency must be a 3-letter code"),
        ("gpt-4o,2.5,,10,DOLLARS,,,", "rates line 3: currency must be a 3-letter code"),
        (
            "gpt-4o,2.5,,10,USD,2025-13-01,,",
            "rates line 3: effective_from is not a date (YYYY-MM-DD): '2025-13-01'",
        ),
        ("gpt-4o,2.5,,10,USD,01/02/2025,,", "rates line 3: effective_from is not a date"),
        ("gpt-4o,2.5,,10,USD,2025-01-01,soon,", "rates line 3: effective_to is not a date"),
        (
            "gpt-4o,2.5,,10,USD,2025-01-01,2025-01-01,",
            "rates line 3: effective_to must be after effective_from",
        ),
        (
            "gpt-4o,2.5,,10,USD,2025-06-01,2025-01-01,",
            "rates line 3: effective_to must be after effective_from",
        ),
    ],
)
def test_parse_errors_name_the_line(row, message):
    text = HEADER + "o3,2,0.5,8,USD,2024-01-01,,ok\n" + row + "\n"
    with pytest.raises(ConfigError) as info:
        parse_rates_csv(text)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "header",
    ["", "model,price\n", "ModelName,PromptTokenRate\n", "input_per_1m,output_per_1m\n"],
)
def test_parse_missing_header(header):
    with pytest.raises(ConfigError, match="rates CSV needs a header with model,input_per_1m"):
        parse_rates_csv(header + "gpt-4o,2.5,10\n")


def test_parse_error_line_number_after_blank_line():
    text = HEADER + "gpt-4o,2.5,,10,USD,,,\n\nbad,x,,1,USD,,,\n"  # the bad row is line 4
    with pytest.raises(ConfigError, match="rates line 4:"):
        parse_rates_csv(text)


# ----------------------------------------------------------------------------- rates_to_csv


def test_rates_to_csv_round_trip_custom():
    rates = [
        Rate(
            "gpt-4o",
            2.5e-06,
            1e-05,
            1.25e-06,
            "USD",
            datetime(2024, 1, 1),
            datetime(2025, 7, 1),
            "a",
        ),
        Rate("gpt-4o", 2.0e-06, 8e-06, None, "USD", datetime(2025, 7, 1), None, 'list, "2025"'),
        Rate("o3", 2e-06, 8e-06, 5e-07, "EUR", EPOCH, None, ""),
        Rate("text-embedding-3-large", 1.3e-07, 0.0, None, "USD", datetime(2024, 1, 1), None, "x"),
    ]
    text = rates_to_csv(list(reversed(rates)))
    assert text.splitlines()[0] == HEADER.strip()
    assert text.splitlines()[1] == "gpt-4o,2.5,1.25,10,USD,2024-01-01,2025-07-01,a"
    assert text.splitlines()[4] == "text-embedding-3-large,0.13,,0,USD,2024-01-01,,x"
    assert parse_rates_csv(text) == rates  # sorted by model, then start


def test_rates_to_csv_round_trip_defaults():
    rates = default_rates()
    again = parse_rates_csv(rates_to_csv(rates))
    assert sorted(again, key=lambda r: r.model_name) == sorted(rates, key=lambda r: r.model_name)


# ----------------------------------------------------------------------------- default_rates

#: The reference price table (USD per 1M tokens): input, cached input, output.
REFERENCE: dict[str, tuple[float, float | None, float]] = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o3": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "text-embedding-3-small": (0.02, None, 0.0),
    "text-embedding-3-large": (0.13, None, 0.0),
    "text-embedding-ada-002": (0.10, None, 0.0),
}


@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_default_rates_match_reference_table(model):
    matches = [r for r in default_rates() if r.model_name == model]
    assert len(matches) == 1, f"{model}: {len(matches)} default rates"
    rate = matches[0]
    prompt, cached, completion = REFERENCE[model]
    assert rate.prompt_rate * 1_000_000 == pytest.approx(prompt, rel=1e-12)
    assert rate.completion_rate * 1_000_000 == pytest.approx(completion, rel=1e-12)
    if cached is None:
        assert rate.cached_prompt_rate is None
    else:
        assert rate.cached_prompt_rate is not None
        assert rate.cached_prompt_rate * 1_000_000 == pytest.approx(cached, rel=1e-12)
    assert rate.currency == "USD"
    assert rate.effective_to is None


def test_default_rates_state_an_as_of_date():
    assert re.fullmatch(r"\d{4}-\d{2}", DEFAULT_RATES_AS_OF)
    for rate in default_rates():
        assert re.search(r"as of \d{4}-\d{2}", rate.source), rate
        assert f"as of {DEFAULT_RATES_AS_OF}" in rate.source, rate


def test_default_rates_are_canonical_known_models_and_do_not_overlap():
    rates = default_rates()
    for rate in rates:
        info = normalize_model(rate.model_name)
        assert info.known and info.name == rate.model_name, rate.model_name
    book = RateBook(rates)
    assert len(book) == len(rates)
    assert set(REFERENCE) <= set(book.models())


def test_default_rate_prices_a_gpt4o_call():
    book = RateBook(default_rates())
    rate = book.lookup(normalize_model("gpt-4o-2024-11-20").name, datetime(2026, 11, 5, 10))
    assert rate is not None
    assert cost_of(Usage(100, 50, 150), rate) == pytest.approx(0.00075, rel=1e-12)
