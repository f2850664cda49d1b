"""Tests for ``bill import`` / ``bill list`` (aoai_helpers.billing.costdetails, .store, the CLI).

The files in tests/data/costdetails are built from Microsoft's documented column lists (see
tests/data/costdetails/SOURCES.md); no customer data. Expected figures are the files' own
numbers added by hand.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cli_run import run_cli
from sqlalchemy import func, select

from aoai_helpers.billing.costdetails import parse_date, parse_decimal
from aoai_helpers.billing.meters import MeterMap
from aoai_helpers.billing.store import ensure_bill_tables, import_cost_details, list_imports
from aoai_helpers.cli.bill import add_bill_parser
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import cost_line_table
from aoai_helpers.exceptions import ConfigError, InputError

BOTH_DATABASES = True

DATA = Path(__file__).parent / "data" / "costdetails"
EA = DATA / "ea-actual-2026-11.csv"
MCA = DATA / "mca-amortized-2026-12.csv"
CHINA = DATA / "ea-usage-china-2026-11.csv"


def lines(engine) -> list[dict]:
    t = cost_line_table.c
    with transaction(engine) as conn:
        ensure_bill_tables(conn)  # a failed first import rolled its table back
        rows = conn.execute(select(cost_line_table).order_by(t.UsageDate, t.MeterName)).mappings()
        return [dict(r) for r in rows]


# ----------------------------------------------------------------------------- the three files


def test_ea_actual_cost_details(engine) -> None:
    s = import_cost_details(engine, EA)
    assert (s.cost_type, s.rows_read, s.lines_stored, s.token_lines) == ("actual", 7, 6, 5)
    assert s.months == ("2026-11",)
    # 3.75 + 0.5 + 3 + 0.8 + 0.8 + 48 (the blob storage row is not Azure OpenAI)
    assert s.totals == {"USD": Decimal("56.85")}
    got = {(r["MeterName"], r["ModelName"], r["TokenKind"], r["Tokens"]) for r in lines(engine)}
    assert got == {
        ("gpt 4o 1120 Inp glbl Tokens", "gpt-4o", "input", 1_500_000),
        ("gpt 4o 1120 cached Inp glbl Tokens", "gpt-4o", "cached_input", 400_000),
        ("gpt 4o 1120 Outp glbl Tokens", "gpt-4o", "output", 300_000),
        ("gpt 4.1 mini 0414 Inp glbl Tokens", "gpt-4.1-mini", "input", 2_000_000),
        ("gpt 4.1 mini 0414 Outp glbl Tokens", "gpt-4.1-mini", "output", 500_000),
        ("Provisioned Managed Unit", None, None, None),  # hours: not attributable by tokens
    }
    first = lines(engine)[0]
    assert first["UsageDate"] == datetime(2026, 11, 5) and first["BillingMonth"] == "2026-11"
    assert first["SubscriptionId"] == "00000000-0000-0000-0000-0000000000a1"
    assert first["ResourceId"].endswith("/accounts/aoai-weu") and first["ResourceId"].islower()


def test_mca_amortized_cost_details(engine) -> None:
    s = import_cost_details(engine, MCA)
    # an UnusedReservation row: only an amortized file has one
    assert (s.cost_type, s.lines_stored, s.token_lines, s.months) == (
        "amortized",
        5,
        4,
        ("2026-12",),
    )
    assert s.totals == {
        "EUR": Decimal("0.74")
        + Decimal("0.023")
        + Decimal("1.38")
        + Decimal("0.058")
        + Decimal("41.52")
    }
    got = {(r["ModelName"], r["TokenKind"], r["Tokens"]) for r in lines(engine)}
    assert ("gpt-5-mini", "input", 3_200_000) in got
    assert ("gpt-5-mini", "cached_input", 1_000_000) in got
    assert ("gpt-5.4", "cached_input", 250_000) in got
    assert {r["UsageDate"] for r in lines(engine)} == {datetime(2026, 12, 1), datetime(2026, 12, 2)}


def test_older_ea_usage_file_of_azure_china(engine) -> None:
    with pytest.raises(InputError, match=r"no currency column .* --currency CNY"):
        import_cost_details(engine, CHINA)
    s = import_cost_details(engine, CHINA, currency="cny")
    assert (s.cost_type, s.lines_stored, s.totals) == ("usage", 3, {"CNY": Decimal("48.969")})
    tokens = sorted(r["Tokens"] for r in lines(engine))
    assert tokens == [20_500, 300_000, 1_500_000]  # 20.5 x 1K, 300 x 1K, 1500 x 1K
    assert {r["Currency"] for r in lines(engine)} == {"CNY"}


def test_cost_type_can_be_given(engine) -> None:
    assert import_cost_details(engine, EA, cost_type="amortized").cost_type == "amortized"
    with pytest.raises(ConfigError, match="cost type must be one of"):
        import_cost_details(engine, EA, cost_type="invoiced")


# ----------------------------------------------------------------------------- re-import


def test_reimport_replaces_the_month(engine) -> None:
    import_cost_details(engine, EA)
    again = import_cost_details(engine, EA)
    assert again.replaced_lines == 6
    assert len(lines(engine)) == 6
    assert {r["ImportId"] for r in lines(engine)} == {again.import_id}


def test_other_cost_types_and_months_are_kept(engine) -> None:
    import_cost_details(engine, EA)
    import_cost_details(engine, EA, cost_type="amortized")
    import_cost_details(engine, MCA)
    import_cost_details(engine, CHINA, currency="CNY")
    assert len(lines(engine)) == 6 + 6 + 5 + 3
    listed = [(b.month, b.cost_type, b.lines) for b in list_imports(engine)]
    assert listed == [
        ("2026-12", "amortized", 5),
        ("2026-11", "usage", 3),
        ("2026-11", "amortized", 6),
        ("2026-11", "actual", 6),
    ]


def test_a_newer_export_of_the_month_replaces_it(engine, tmp_path: Path) -> None:
    import_cost_details(engine, EA)
    newer = tmp_path / "ea-actual-2026-11-rerun.csv"
    text = EA.read_text("utf-8").replace(",1500,,3.75,", ",1600,,4,")
    assert text != EA.read_text("utf-8")
    newer.write_text(text, "utf-8")
    s = import_cost_details(engine, newer)
    assert s.totals == {"USD": Decimal("57.10")} and s.replaced_lines == 6
    with transaction(engine) as conn:
        count = conn.execute(select(func.count()).select_from(cost_line_table)).scalar()
    assert count == 6


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_meter_is_one_error_naming_it_and_nothing_is_stored(
    engine, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    text = EA.read_text("utf-8")
    bad.write_text(text.replace("gpt 4o 1120 Outp glbl Tokens", "Text-Davinci Tokens"), "utf-8")
    with pytest.raises(InputError) as err:
        import_cost_details(engine, bad)
    message = str(err.value)
    assert "'Text-Davinci Tokens'" in message and '--meter "METER NAME=model:kind"' in message
    assert "\n" not in message
    assert lines(engine) == []
    mapped = MeterMap()
    mapped.add_option("Text-Davinci Tokens=gpt-4o:output")
    assert import_cost_details(engine, bad, meters=mapped).token_lines == 5


def test_a_token_meter_in_an_unknown_unit_is_an_error(engine, tmp_path: Path) -> None:
    bad = tmp_path / "unit.csv"
    bad.write_text(EA.read_text("utf-8").replace(",1M,2,", ",1 Hour,2,"), "utf-8")
    with pytest.raises(InputError, match=r"unit of measure '1 Hour' is not a token count"):
        import_cost_details(engine, bad)


def test_missing_columns_are_named(engine, tmp_path: Path) -> None:
    bad = tmp_path / "cols.csv"
    bad.write_text("Date,MeterName,Quantity\n11/05/2026,x,1\n", "utf-8")
    with pytest.raises(
        InputError,
        match=r"not an Azure cost-details export: no column MeterCategory, UnitOfMeasure, CostInBillingCurrency",
    ):
        import_cost_details(engine, bad)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", "utf-8")
    with pytest.raises(InputError, match="no header with a MeterName column"):
        import_cost_details(engine, other)


def test_no_aoai_rows_is_an_error(engine, tmp_path: Path) -> None:
    header, *rows = EA.read_text("utf-8").splitlines()
    blob = tmp_path / "storage-only.csv"
    blob.write_text("\n".join([header, *(r for r in rows if "Blob" in r)]) + "\n", "utf-8")
    with pytest.raises(InputError, match=r"1 row\(s\) read, none for Azure OpenAI"):
        import_cost_details(engine, blob)


def test_a_bad_value_names_its_line(engine, tmp_path: Path) -> None:
    bad = tmp_path / "value.csv"
    bad.write_text(EA.read_text("utf-8").replace("11/06/2026", "2026/11/06", 1), "utf-8")
    with pytest.raises(InputError, match=r"value.csv line 6: not a date"):
        import_cost_details(engine, bad)
    with pytest.raises(InputError, match="cannot read"):
        import_cost_details(engine, tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("text", "day"),
    [("11/05/2026", datetime(2026, 11, 5)), ("1/5/2026", datetime(2026, 1, 5)),
     ("2026-11-05", datetime(2026, 11, 5)), ("2026-11-05T00:00:00Z", datetime(2026, 11, 5)),
     ("2026-11-05T00:00:00.0000000Z", datetime(2026, 11, 5)), ("20261105", datetime(2026, 11, 5)),
     ("11/05/2026 12:00:00 AM", datetime(2026, 11, 5))],
)  # fmt: skip
def test_documented_date_formats(text: str, day: datetime) -> None:
    assert parse_date(text) == day


@pytest.mark.parametrize("text", ["05.11.2026", "Nov 5 2026", "", "13/05/2026"])
def test_other_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text)


def test_amounts_are_exact() -> None:
    assert parse_decimal("0.1") + parse_decimal("0.2") == Decimal("0.3")
    assert parse_decimal("1E-05") == Decimal("0.00001")
    for bad in ("1,5", "NaN", "x"):
        with pytest.raises(ValueError):
            parse_decimal(bad)


def test_headers_without_spaces_and_report_lines_above(engine, tmp_path: Path) -> None:
    """The EA usage terms as the MCA mapping page spells them (ConsumedQuantity, ExtendedCost…),
    below two report lines."""
    f = tmp_path / "usage.csv"
    f.write_text(
        "Usage Data Extract,\nProvisioning Status,\n"
        "Date,MeterCategory,MeterSubCategory,MeterName,ConsumedQuantity,ResourceRate,ExtendedCost,UnitOfMeasure,InstanceId\n"
        "11/07/2026,Cognitive Services,Azure OpenAI,gpt-4o-0806 Outp regnl Tokens,2,0.072,0.144,1K,/x\n",
        "utf-8",
    )
    s = import_cost_details(engine, f, currency="CNY")
    assert (s.cost_type, s.lines_stored, s.totals) == ("usage", 1, {"CNY": Decimal("0.144")})
    assert lines(engine)[0]["Tokens"] == 2000


# ----------------------------------------------------------------------------- CLI


def _bill_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aoai")
    add_bill_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _registered() -> bool:
    from aoai_helpers.cli.main import build_parser

    try:
        build_parser().parse_args(["bill", "list"])
    except SystemExit:
        return False
    return True


@pytest.mark.sqlite_only
def test_bill_commands_in_process(engine, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AOAI_NOW", "2026-12-03T09:00:00Z")
    db = str(engine.url)
    args = _bill_parser().parse_args(["bill", "import", str(EA), "--db", db])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == (
        "ea-actual-2026-11.csv: 7 row(s) read, 6 Azure OpenAI line(s) stored (5 by tokens), "
        "month(s) 2026-11, cost type actual, total 56.85 USD"
    )
    args = _bill_parser().parse_args(["bill", "list", "--db", db])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2026-11  actual" in out and "56.85 USD" in out and "2026-12-03 09:00 UTC" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(
        EA.read_text("utf-8").replace("Provisioned Managed Unit", "gpt-4o Tokens"), "utf-8"
    )
    args = _bill_parser().parse_args(["bill", "import", str(bad), "--db", db])
    with pytest.raises(
        InputError, match="cannot tell the model and token kind of meter 'gpt-4o Tokens'"
    ):
        args.func(args)
    args = _bill_parser().parse_args(
        ["bill", "import", str(bad), "--db", db, "--meter", "gpt-4o Tokens=none"]
    )
    assert args.func(args) == 0
    assert "replaced 6 earlier line(s)" in capsys.readouterr().out
    args = _bill_parser().parse_args(["bill", "import", str(bad), "--db", db, "--meter", "oops"])
    with pytest.raises(ConfigError, match="--meter must look like"):
        args.func(args)


@pytest.mark.sqlite_only
@pytest.mark.skipif(
    not _registered(), reason="`bill` is not registered in aoai_helpers/cli/main.py yet"
)
def test_cli_bill_import_and_list(engine, tmp_path: Path) -> None:
    db = str(engine.url)
    done = run_cli("bill", "import", str(EA), "--db", db)
    assert done.returncode == 0, done.stderr
    assert "6 Azure OpenAI line(s) stored" in done.stdout
    listed = run_cli("bill", "list", "--db", db)
    assert listed.returncode == 0 and "2026-11  actual" in listed.stdout, listed.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text(
        EA.read_text("utf-8").replace("Provisioned Managed Unit", "gpt-4o Tokens"), "utf-8"
    )
    failed = run_cli("bill", "import", str(bad), "--db", db)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith(
        "error: bad.csv: cannot tell the model and token kind of meter 'gpt-4o Tokens'"
    )
    assert len(failed.stderr.strip().splitlines()) == 1
