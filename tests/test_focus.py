"""Tests for aoai_helpers.analysis.focus: the month as a FOCUS 1.4 Cost and Usage CSV.

The database is filled through the real ingest path (``ingest_events``) with hand-made events,
priced at the default rates (USD per 1M tokens: gpt-4o 2.50 / cached 1.25 / 10.00,
gpt-4.1-mini 0.40 / 1.60, text-embedding-3-small 0.02). The file is checked against the
spec's rules in ``tests/focus_spec.py`` (written from the FOCUS text, not from the writer) and
against figures worked out by hand in the comments.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest
from focus_spec import (
    BY_NAME,
    CUSTOM_COLUMN_ID,
    FOCUS_COLUMN_ID,
    MANDATORY,
    NO_DISCOUNT_RULES,
    REQUIRED_BY_OPERATING_MODEL,
    ROW_RULES,
    type_ok,
)
from sqlalchemy import update
from usage_events import HELLO, usage

import aoai_helpers
from aoai_helpers.analysis.focus import FocusResult, FocusSettings, settings_from_spec, write_focus
from aoai_helpers.analysis.report import chargeback_by_bu
from aoai_helpers.core.money import round_money, to_decimal
from aoai_helpers.core.pricing import Rate
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import rate_table
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.pipeline.reprice import set_rates
from aoai_helpers.spec import load_spec

#: run every database test on SQLite and on a real PostgreSQL server (tests/conftest.py)
BOTH_DATABASES = True


def sub(sid: str, name: str) -> dict[str, str]:
    return {"SubscriptionId": sid, "SubscriptionName": name}


SUB_A, SUB_B, SUB_C = sub("sub-a", "fin-a"), sub("sub-b", "fin-b"), sub("sub-c", "legal-review")


def records(text: str) -> list[list[str]]:
    """RFC 4180, strictly: every record ends with CRLF; CR or LF elsewhere only inside quotes;
    a quote only opens a cell or is doubled inside a quoted one."""
    assert text.endswith("\r\n"), "the last record ends with CRLF"
    out: list[list[str]] = []
    row: list[str] = []
    cell: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1 : i + 2] == '"':
                cell.append('"')
                i += 1
            elif ch == '"':
                quoted = False
                assert text[i + 1 : i + 2] in (",", "\r"), f"text after a closing quote at {i}"
            else:
                cell.append(ch)
        elif ch == '"':
            assert not cell, f"a quote inside an unquoted cell at {i}"
            quoted = True
        elif ch == ",":
            row.append("".join(cell))
            cell = []
        elif ch == "\r":
            assert text[i + 1 : i + 2] == "\n", f"a bare CR at {i}"
            row.append("".join(cell))
            out.append(row)
            row, cell = [], []
            i += 1
        else:
            assert ch != "\n", f"a bare LF at {i}"
            cell.append(ch)
        i += 1
    assert not quoted and not row and not cell
    return out


def read_focus(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    header, *rows = records(raw.decode("utf-8"))
    assert all(len(r) == len(header) for r in rows)
    return header, [dict(zip(header, r, strict=True)) for r in rows]


@pytest.fixture
def billed(engine, make_v2, ingest_events):
    """November 2026 (and a call in October) over three subscriptions, one unpriced call, one
    prompt-only estimate, one throttled call."""
    with transaction(engine) as conn:
        set_bu(
            conn,
            [
                BusinessUnit("sub-a", "Finance", "fin-a", "CC-1"),
                BusinessUnit("sub-b", "Finance", "fin-b", "CC-1"),
            ],
        )
    result = ingest_events(
        engine,
        make_v2(**SUB_A, ExecTimeUTC="2026-11-01T00:00:00.000Z", Usage=usage(1000, 200)),
        make_v2(**SUB_A, ExecTimeUTC="2026-11-10T12:00:00.000Z", Usage=usage(2000, 100, 1024)),
        make_v2(
            **SUB_B,
            ExecTimeUTC="2026-11-15T09:00:00.000Z",
            DeploymentName="gpt-4.1-mini",
            Model="gpt-4.1-mini-2025-04-14",
            Usage=usage(500, 500),
        ),
        make_v2(  # no rate: unpriced
            **SUB_B,
            ExecTimeUTC="2026-11-16T09:00:00.000Z",
            Model="my-finetune",
            Usage=usage(10, 10),
        ),
        make_v2(  # usage not reported: prompt counted from the request (8 tokens)
            **SUB_B,
            ExecTimeUTC="2026-11-17T09:00:00.000Z",
            IsStreaming=True,
            Usage=None,
            Request=HELLO,
        ),
        make_v2(**SUB_C, ExecTimeUTC="2026-11-30T23:59:59.999Z", Usage=usage(100, 50)),
        make_v2(**SUB_C, ExecTimeUTC="2026-11-20T10:00:00.000Z", StatusCode=429, Usage=None),
        make_v2(**SUB_A, ExecTimeUTC="2026-10-31T23:59:59.999Z", Usage=usage(100, 50)),
    )
    assert (result.stored, result.unpriced, result.prompt_only) == (8, 1, 1)
    return engine


@pytest.fixture
def november(billed, tmp_path) -> tuple[FocusResult, list[str], list[dict[str, str]]]:
    result = write_focus(tmp_path / "focus.csv", billed, "2026-11")
    header, rows = read_focus(result.path)
    return result, header, rows


# ----------------------------------------------------------------------------- the spec's rules


def test_every_required_column_is_present(november):
    _, header, _ = november
    missing = [c for c in (*MANDATORY, *REQUIRED_BY_OPERATING_MODEL) if c not in header]
    assert missing == []


def test_column_ids(november):
    """Every column is a FOCUS column or an x_ custom column, FOCUS columns first."""
    _, header, _ = november
    unknown = [c for c in header if c not in BY_NAME and not CUSTOM_COLUMN_ID.fullmatch(c)]
    assert unknown == []
    assert all(FOCUS_COLUMN_ID.fullmatch(c) for c in header if c in BY_NAME)
    kinds = [c.startswith("x_") for c in header]
    assert kinds == sorted(kinds), "custom columns after the FOCUS columns"
    assert len(set(header)) == len(header)


def test_types_nulls_and_allowed_values(november):
    _, header, rows = november
    assert rows
    problems = []
    for n, row in enumerate(rows, start=2):
        for name in header:
            spec = BY_NAME.get(name)
            if spec is None:
                continue
            text = row[name]
            if text == "":
                if not spec.nullable:
                    problems.append(f"line {n}: {name} is null ({spec.section})")
                continue
            if not type_ok(spec.data_type, text):
                problems.append(f"line {n}: {name}={text!r} is not {spec.data_type}")
            if spec.allowed is not None and text not in spec.allowed:
                problems.append(f"line {n}: {name}={text!r} is not an allowed value")
    assert problems == []


@pytest.mark.parametrize("rule", ROW_RULES + NO_DISCOUNT_RULES, ids=lambda r: r.rule_id)
def test_row_rule(november, rule):
    _, _, rows = november
    broken = [n for n, row in enumerate(rows, start=2) if not rule.holds(row)]
    assert broken == [], f"{rule.section}: {rule.requirement}"


def test_sku_price_has_one_parent_sku(november):
    """SKU Price ID: "SkuPriceId MUST have one and only one parent SkuId"."""
    _, _, rows = november
    parents: dict[str, set[str]] = {}
    for row in rows:
        parents.setdefault(row["SkuPriceId"], set()).add(row["SkuId"])
    assert all(len(p) == 1 for p in parents.values())


# ----------------------------------------------------------------------------- the figures


def test_billed_cost_adds_up_to_the_chargeback(november, billed):
    result, _, rows = november
    total = sum(Decimal(r["BilledCost"]) for r in rows)
    # 0.0045 + 0.00472 + 0.001 + 0.00002 (Finance) + 0.00075 (legal-review)
    assert total == Decimal("0.01099")
    assert result.billed_cost == {"USD": total}
    charged = sum(c.cost for c in chargeback_by_bu(billed, "2026-11"))
    assert round_money(total, "USD") == round_money(charged, "USD")
    assert abs(total - to_decimal(charged)) < Decimal("1e-15")
    assert sum(Decimal(r["EffectiveCost"]) for r in rows) == total


def test_token_kinds_are_separate_rows_with_their_own_price(november):
    """The call of the 10th: 2000 prompt tokens, 1024 of them cached, 100 completion tokens."""
    _, _, rows = november
    tenth = [r for r in rows if r["ChargePeriodStart"] == "2026-11-10T00:00:00Z"]
    got = [
        (
            r["x_TokenKind"],
            r["SkuMeter"],
            r["ConsumedQuantity"],
            r["PricingQuantity"],
            r["ListUnitPrice"],
            r["BilledCost"],
        )
        for r in tenth
    ]
    assert got == [
        ("input", "Input Tokens", "976", "0.000976", "2.5", "0.00244"),  # 976 x 2.50/1M
        ("cached_input", "Cached Input Tokens", "1024", "0.001024", "1.25", "0.00128"),
        ("output", "Output Tokens", "100", "0.0001", "10", "0.001"),
    ]
    (row, *_) = tenth
    assert (row["ChargePeriodEnd"], row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (
        "2026-11-11T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    )
    assert (row["PricingUnit"], row["ConsumedUnit"], row["ChargeCategory"]) == (
        "1000000 Tokens",
        "Tokens",
        "Usage",
    )


def test_business_unit_accounts_and_tags(november):
    _, _, rows = november
    import json

    finance = [r for r in rows if r["x_ApimSubscriptionId"] == "sub-b"]
    assert {(r["BillingAccountId"], r["SubAccountId"], r["SubAccountName"]) for r in finance} == {
        ("Finance", "sub-b", "fin-b")
    }
    assert {r["Tags"] for r in finance} == {'{"BusinessUnit":"Finance","CostCentre":"CC-1"}'}
    legal = [r for r in rows if r["x_ApimSubscriptionId"] == "sub-c"]
    # unmapped: billed under the subscription name, no cost centre tag
    assert {json.dumps(json.loads(r["Tags"])) for r in legal} == {
        '{"BusinessUnit": "legal-review"}'
    }
    assert {r["ChargePeriodStart"] for r in legal} == {"2026-11-30T00:00:00Z"}
    assert {r["ChargePeriodEnd"] for r in legal} == {"2026-12-01T00:00:00Z"}


def test_usage_source_and_provisional(november):
    _, _, rows = november
    estimated = [r for r in rows if r["x_Provisional"] == "true"]
    assert [(r["x_UsageSource"], r["ConsumedQuantity"], r["BilledCost"]) for r in estimated] == [
        ("prompt_only", "8", "0.00002")  # 8 x 2.50/1M, no output row: none counted
    ]
    assert {r["x_UsageSource"] for r in rows} == {"reported", "prompt_only"}


def test_unpriced_calls_are_left_out_never_zero(november):
    result, _, rows = november
    assert "my-finetune" not in {r["x_ModelName"] for r in rows}
    assert all(Decimal(r["BilledCost"]) > 0 for r in rows)
    assert (result.unpriced_calls, result.unpriced_tokens, result.unpriced_models) == (
        1,
        20,
        ("my-finetune",),
    )
    assert result.unbilled_calls == 1  # the throttled call: cost 0 by rule, not listed
    assert (result.rows, result.calls) == (10, 5)  # 2 + 3 + 2 + 1 + 2 rows of 5 priced calls
    assert "1 unpriced calls (20 tokens; no rate for my-finetune)" in result.describe()


def test_a_month_of_unpriced_calls_only(empty_engine, make_v2, ingest_events, tmp_path):
    ingest_events(empty_engine, make_v2(Usage=usage(10, 10)))  # no rates at all
    target = tmp_path / "focus.csv"
    with pytest.raises(InputError, match=r"none of the 1 calls of 2026-11 is priced.*gpt-4o"):
        write_focus(target, empty_engine, "2026-11")
    assert not target.exists()


def test_empty_month_writes_nothing(billed, tmp_path):
    out = tmp_path / "out"  # the SQLite database lives in tmp_path
    out.mkdir()
    target = out / "focus.csv"
    target.write_text("previous export", encoding="utf-8")
    with pytest.raises(InputError, match="no calls in 2026-09"):
        write_focus(target, billed, "2026-09")
    assert target.read_text(encoding="utf-8") == "previous export"
    assert os.listdir(out) == ["focus.csv"]


def test_bad_month(billed, tmp_path):
    with pytest.raises(ConfigError, match="month must look like"):
        write_focus(tmp_path / "f.csv", billed, "2026-13")


# ----------------------------------------------------------------------------- text and file


def test_text_is_quoted_and_numbers_have_no_exponent(engine, make_v2, ingest_events, tmp_path):
    odd = 'R&D, "Labs"\nEU'
    with transaction(engine) as conn:
        set_bu(conn, [BusinessUnit("sub-d", odd, None, "=1+1")])
    ingest_events(
        engine,
        make_v2(
            SubscriptionId="sub-d",
            SubscriptionName=None,
            DeploymentName="text-embedding-3-small",
            Model="text-embedding-3-small",
            Operation="embeddings",
            Usage=usage(1, 0),
        ),
    )
    result = write_focus(tmp_path / "f.csv", engine, "2026-11")
    text = result.path.read_text(encoding="utf-8")
    assert '"R&D, ""Labs""\nEU"' in text
    _, (row,) = read_focus(result.path)
    assert (row["BillingAccountId"], row["x_CostCentre"]) == (odd, "=1+1")  # as given
    assert (row["BilledCost"], row["ListUnitPrice"], row["PricingQuantity"]) == (
        "0.00000002",  # 1 token x 0.02/1M, never 2E-8
        "0.02",
        "0.000001",
    )
    assert row["SubAccountName"] == ""  # NULL: the calls carry no subscription name


def test_written_atomically(billed, tmp_path):
    out = tmp_path / "out"  # the SQLite database lives in tmp_path
    out.mkdir()
    target = out / "focus.csv"
    target.write_text("old", encoding="utf-8")
    write_focus(target, billed, "2026-11")
    assert target.read_text(encoding="utf-8").startswith("BilledCost,")
    assert os.listdir(out) == ["focus.csv"]  # no temporary file left behind
    folder = out / "a-folder"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot write"):
        write_focus(folder, billed, "2026-11")
    assert folder.is_dir() and os.listdir(folder) == []
    assert sorted(os.listdir(out)) == ["a-folder", "focus.csv"]


# ----------------------------------------------------------------------------- rates


def test_a_rate_change_within_a_day_splits_the_day(empty_engine, make_v2, ingest_events, tmp_path):
    from datetime import datetime

    noon = datetime(2026, 11, 10, 12)
    with transaction(empty_engine) as conn:
        set_rates(
            conn,
            [
                Rate("gpt-4o", 1e-6, 1e-6, effective_to=noon),
                Rate("gpt-4o", 2e-6, 2e-6, effective_from=noon),
            ],
        )
    ingest_events(
        empty_engine,
        make_v2(ExecTimeUTC="2026-11-10T10:00:00Z", Usage=usage(100, 0)),
        make_v2(ExecTimeUTC="2026-11-10T14:00:00Z", Usage=usage(100, 0)),
    )
    result = write_focus(tmp_path / "f.csv", empty_engine, "2026-11")
    _, rows = read_focus(result.path)
    assert sorted((r["ListUnitPrice"], r["BilledCost"]) for r in rows) == [
        ("1", "0.0001"),  # 100 x 1.00/1M before noon
        ("2", "0.0002"),  # 100 x 2.00/1M after
    ]
    assert {r["ChargePeriodStart"] for r in rows} == {"2026-11-10T00:00:00Z"}
    (charge,) = chargeback_by_bu(empty_engine, "2026-11")
    assert round_money(result.billed_cost["USD"], "USD") == round_money(charge.cost, "USD")


def test_costs_priced_with_an_edited_rate_are_refused(billed, tmp_path):
    with transaction(billed) as conn:  # edited behind the pipeline's back: rows not repriced
        conn.execute(
            update(rate_table)
            .where(rate_table.c.ModelName == "gpt-4o")
            .values(PromptTokenRate=1e-6)
        )
    target = tmp_path / "f.csv"
    with pytest.raises(ConfigError, match=r"gpt-4o on 2026-11-01 .*rates reprice"):
        write_focus(target, billed, "2026-11")
    assert not target.exists()


# ----------------------------------------------------------------------------- settings


def test_settings_from_spec_give_arm_ids(billed, tmp_path):
    spec = load_spec(Path(aoai_helpers.__file__).parent / "data" / "gateway.yaml")
    settings = settings_from_spec(spec, aoai_resource_group="rg-aoai", provider_name="Contoso AI")
    result = write_focus(tmp_path / "f.csv", billed, "2026-11", settings=settings)
    _, rows = read_focus(result.path)
    row = next(r for r in rows if r["x_ApimSubscriptionId"] == "sub-a")
    arm = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups"
    assert row["SubAccountId"] == (
        f"{arm}/rg-aoai-gateway/providers/Microsoft.ApiManagement/service/apim-aoai-gateway"
        "/subscriptions/sub-a"
    )
    assert row["ResourceId"] == (
        f"{arm}/rg-aoai/providers/Microsoft.CognitiveServices/accounts/aoai-weu/deployments/gpt-4o"
    )
    assert (row["ResourceName"], row["ServiceProviderName"], row["InvoiceIssuerName"]) == (
        "gpt-4o",
        "Contoso AI",
        "Contoso AI",
    )
    assert row["HostProviderName"] == "Microsoft"


def test_default_settings_use_names(november):
    _, _, rows = november
    row = rows[0]
    assert (row["ResourceId"], row["SubAccountId"]) == ("gpt-4o", "sub-a")
    assert row["ServiceProviderName"] == FocusSettings().provider_name
