"""Tests for aoai_helpers.billing.meters: Azure OpenAI meter names → model and token kind.

The meter names are real spellings. Where each comes from:

* ``RETAIL`` — the Azure Retail Prices API, ``serviceName eq 'Foundry Models'`` (productName
  "Azure OpenAI", "Azure OpenAI GPT5", "Azure OpenAI Reasoning"): the ``meterName`` /
  ``skuName`` values it returns (https://prices.azure.com/api/retail/prices, documented at
  https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices);
  cost details carry the same ``MeterName``.
* ``MANAGE_COSTS`` — "Plan to manage costs for Azure OpenAI" shows cost analysis grouped by
  meter with "Text-Davinci Tokens"
  (https://learn.microsoft.com/azure/ai-services/openai/how-to/manage-costs).
"""

from __future__ import annotations

import pytest

from aoai_helpers.billing.meters import (
    MeterMap,
    MeterReading,
    UnreadableMeter,
    meter_key,
    read_meter,
    unit_tokens,
)
from aoai_helpers.exceptions import ConfigError

RETAIL = "Azure Retail Prices API, serviceName 'Foundry Models'"
MANAGE_COSTS = "learn.microsoft.com/azure/ai-services/openai/how-to/manage-costs"

TOKEN_METERS = [
    # (meter name, model, kind, source)
    ("gpt 4o 1120 Inp glbl Tokens", "gpt-4o", "input", RETAIL),
    ("gpt 4o 1120 cached Inp glbl Tokens", "gpt-4o", "cached_input", RETAIL),
    ("gpt 4o 1120 Outp glbl Tokens", "gpt-4o", "output", RETAIL),
    ("gpt 4o 0806 Outp glbl 1K Tokens", "gpt-4o", "output", RETAIL),
    ("4o cchd Inp regnl 1M Tokens", "gpt-4o", "cached_input", RETAIL),
    ("gpt-4o-0806 Inp regnl Tokens", "gpt-4o", "input", RETAIL),
    ("gpt 4.1 Inp glbl Tokens", "gpt-4.1", "input", RETAIL),
    ("gpt 4.1 nano cached Inp glbl Tokens", "gpt-4.1-nano", "cached_input", RETAIL),
    ("GPT 5 Inpt Glbl 1M Tokens", "gpt-5", "input", RETAIL),
    ("GPT 5 outpt Glbl 1M Tokens", "gpt-5", "output", RETAIL),
    ("GPT 5 Mini cchd Inpt Glbl 1M Tokens", "gpt-5-mini", "cached_input", RETAIL),
    ("GPT 5 Chat cchd Inpt Glbl 1M Tokens", "gpt-5-chat", "cached_input", RETAIL),
    ("5.4 inp Gl 1M Tokens", "gpt-5.4", "input", RETAIL),
    ("5.4 cd inp Gl 1M Tokens", "gpt-5.4", "cached_input", RETAIL),
    ("5.4 opt Gl 1M Tokens", "gpt-5.4", "output", RETAIL),
    ("5.2 chat 0210 opt Gl 1M Tokens", "gpt-5.2-chat", "output", RETAIL),
    ("5.5 ShortCo inp Gl 1M Tokens", "gpt-5.5", "input", RETAIL),
    ("5 mini pp Inp Gl 1M Tokens", "gpt-5-mini", "input", RETAIL),
    ("o3 0416 Inp glbl Tokens", "o3", "input", RETAIL),
    ("o3 0416 Outp glbl Tokens", "o3", "output", RETAIL),
    ("o3-pro Inp glbl Tokens", "o3-pro", "input", RETAIL),
    ("o4-mini 0416 Inp glbl Tokens", "o4-mini", "input", RETAIL),
    ("o3 mini 0131 Batch Outp Data Zone Tokens", "o3-mini", "output", RETAIL),
    ("o3 deep research Inpt DZone 1M Tokens", "o3-deep-research", "input", RETAIL),
]


@pytest.mark.parametrize(("name", "model", "kind", "source"), TOKEN_METERS)
def test_token_meters(name: str, model: str, kind: str, source: str) -> None:
    assert read_meter(name) == MeterReading(model, kind), source  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("Provisioned Managed Unit", RETAIL),  # unit "1 Hour"
        ("gpt 4o 1120 Out Data Zone", RETAIL),  # a skuName, not a meter name: no "Tokens"
        ("gpt-4o-mini-0718 Training Tokens", "fine-tuning training: manage-costs"),
        ("", "a purchase: MeterName 'might be shown as blank' (cost-usage-details-ea)"),
    ],
)
def test_meters_that_are_not_tokens(name: str, source: str) -> None:
    reading = read_meter(name)
    assert reading == MeterReading(None, None), source
    assert not isinstance(reading, UnreadableMeter) and not reading.is_tokens


@pytest.mark.parametrize(
    ("name", "reason", "source"),
    [
        ("Text-Davinci Tokens", "not one the gateway knows", MANAGE_COSTS),
        ("gpt rt aud 0828 Inp glbl Tokens", "audio/image/realtime", RETAIL),
        ("gpt rt txt 0828 cchd Inp glbl Tokens", "audio/image/realtime", RETAIL),
        ("gpt-4o Tokens", "no input/output word", "a meter without a side"),
        ("Inp glbl Tokens", "no model", "a meter without a model"),
    ],
)
def test_token_meters_it_cannot_read(name: str, reason: str, source: str) -> None:
    reading = read_meter(name)
    assert isinstance(reading, UnreadableMeter), source
    assert reason in reading.reason and reading.meter_name == name


def test_embedding_meters_bill_input() -> None:
    assert read_meter("text-embedding-3-small Tokens") == MeterReading(
        "text-embedding-3-small", "input"
    )


@pytest.mark.parametrize(
    ("unit", "tokens"),
    [("1K", 1000), ("1M", 1_000_000), ("1000", 1000), ("1K Tokens", 1000), ("1M Tokens", 10**6),
     ("10K", 10_000), ("Tokens", 1), ("1", 1), (" 1k ", 1000),
     ("1 Hour", None), ("1 GB/Month", None), ("", None), (None, None), ("0", None), ("1.5", None)],
)  # fmt: skip
def test_unit_tokens(unit: str | None, tokens: int | None) -> None:
    assert unit_tokens(unit) == tokens


def test_meter_map_wins_over_the_reader() -> None:
    m = MeterMap()
    m.add_option("Text-Davinci Tokens=gpt-35-turbo-instruct:output")
    m.add_option("gpt 4o 1120 Inp glbl Tokens=none")
    assert m.read("text-davinci  tokens") == MeterReading("gpt-35-turbo-instruct", "output")
    assert m.read("gpt 4o 1120 Inp glbl Tokens") == MeterReading(None, None)
    assert m.read("gpt 4o 1120 Outp glbl Tokens") == MeterReading("gpt-4o", "output")


def test_meter_map_csv() -> None:
    m = MeterMap()
    m.add_csv("MeterName,Model,TokenKind\nText-Davinci Tokens,gpt-4o-2024-11-20,input\n", "map.csv")
    assert m.entries[meter_key("Text-Davinci Tokens")] == MeterReading("gpt-4o", "input")
    with pytest.raises(ConfigError, match=r"map\.csv: a meter map needs the columns"):
        MeterMap().add_csv("Meter,Model\nx,y\n", "map.csv")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("no equals sign", "--meter must look like"),
        ("X Tokens=gpt-4o:prompt", "must be input, output, cached_input or none"),
        ("X Tokens=:input", "needs a model"),
        ("=gpt-4o:input", "needs a meter name"),
    ],
)
def test_bad_meter_options(option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MeterMap().add_option(option)
