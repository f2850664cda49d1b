"""Tests for the command line (aoai_helpers.cli.main): output, exit status, one-line errors, secrets.

Most tests call :func:`aoai_helpers.cli.main.main` in-process (capsys); a few run the real
``python -m aoai_helpers`` in a subprocess, from an empty directory with a clean environment,
to see what a user sees (no traceback, the default database path relative to the cwd).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli
from secrets_registry import register_secret
from sqlalchemy import select

from aoai_helpers.cli.main import build_parser, main
from aoai_helpers.core.tokens import PINNED_SHA256
from aoai_helpers.db.engine import engine_from_url, transaction
from aoai_helpers.db.tables import dead_letter, token_table

MakeEvent = Callable[..., dict[str, Any]]
README = Path(__file__).resolve().parent.parent / "README.md"


# ----------------------------------------------------------------------------- helpers


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_module(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m aoai_helpers …`` as a user runs it."""
    return run_cli(*argv, cwd=cwd)


def assert_one_line_error(err: str) -> None:
    assert err.startswith("error: ")
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def write_jsonl(path: Path, *events: dict[str, Any] | bytes) -> Path:
    lines = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def squeeze(line: str) -> str:
    return " ".join(line.split())


def lines_starting(out: str, prefix: str) -> list[str]:
    return [squeeze(line) for line in out.splitlines() if squeeze(line).startswith(prefix)]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cli.db")


@pytest.fixture
def events_file(tmp_path: Path, make_v2: MakeEvent, make_v1: MakeEvent) -> Path:
    """3 v2 events, 1 v1 event and 1 line that is not JSON."""
    return write_jsonl(
        tmp_path / "events.jsonl",
        make_v2(),
        make_v2(),
        make_v2(SubscriptionId="sub-legal-01", SubscriptionName="legal-review"),
        make_v1(),
        b"{not json",
    )


def command_paths(parser: argparse.ArgumentParser) -> list[str]:
    """Every leaf command of an argparse tree, e.g. ``ingest``, ``rates set``."""
    paths: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                below = command_paths(sub)
                paths += [f"{name} {b}" for b in below] if below else [name]
    return paths


# ----------------------------------------------------------------------------- ingest


def test_ingest_prints_the_summary_and_exits_0_despite_dead_letters(
    capsys: pytest.CaptureFixture[str], events_file: Path, db: str
) -> None:
    status, out, err = run(capsys, "ingest", str(events_file), "--db", db)
    assert (status, err) == (0, "")
    assert out == "5 received: 4 stored, 0 duplicates, 1 dead-lettered\n"

    status, out, err = run(capsys, "ingest", str(events_file), "--db", db, "--batch-size", "2")
    assert (status, err) == (0, "")
    assert out == "5 received: 0 stored, 4 duplicates, 1 dead-lettered\n"


BOM = b"\xef\xbb\xbf"


def _bom_file(path: Path, shape: str, events: list[dict[str, Any]]) -> Path:
    if shape == "jsonl":
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    elif shape == "jsonl-crlf":
        data = b"".join(json.dumps(e).encode() + b"\r\n" for e in events)
    elif shape == "array":
        data = json.dumps(events, indent=2).encode()
    else:  # one pretty-printed object
        data = json.dumps(events[0], indent=2).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(BOM + data))
    else:
        path.write_bytes(BOM + data)
    return path


@pytest.mark.parametrize(
    ("shape", "name"),
    [
        ("jsonl", "e.jsonl"),
        ("jsonl-crlf", "e.jsonl"),
        ("jsonl", "e.jsonl.gz"),
        ("array", "e.json"),
        ("array", "e.json.gz"),
        ("object", "e.json"),
    ],
)
def test_ingest_accepts_a_utf8_byte_order_mark(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make_v2: MakeEvent,
    db: str,
    shape: str,
    name: str,
) -> None:
    events = [make_v2(), make_v2(), make_v2()]
    path = _bom_file(tmp_path / name, shape, events)
    status, out, err = run(capsys, "ingest", str(path), "--db", db)
    n = 1 if shape == "object" else 3
    assert (status, err, out) == (
        0,
        "",
        f"{n} received: {n} stored, 0 duplicates, 0 dead-lettered\n",
    )
    with transaction(engine_from_url(db)) as conn:
        ids = set(conn.execute(select(token_table.c.RequestId)).scalars())
    assert ids == {e["RequestId"] for e in events[:n]}


def test_ingest_progress_counts_the_byte_order_mark(tmp_path: Path, make_v2: MakeEvent) -> None:
    from aoai_helpers.pipeline.files import iter_file_events

    path = _bom_file(tmp_path / "e.jsonl", "jsonl", [make_v2(), make_v2()])
    seen: list[int] = []
    events = list(iter_file_events(path, on_bytes=seen.append))
    assert [e.source for e in events] == ["e.jsonl:1", "e.jsonl:2"]  # the BOM is on line 1
    assert not events[0].body.startswith(BOM)
    assert sum(seen) == path.stat().st_size


def test_ingest_of_a_file_that_is_not_utf8_is_dead_lettered_as_before(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_v2: MakeEvent, db: str
) -> None:
    path = tmp_path / "u16.jsonl"
    path.write_bytes("\n".join(json.dumps(make_v2()) for _ in range(2)).encode("utf-16"))
    status, out, err = run(capsys, "ingest", str(path), "--db", db)
    assert (status, err) == (0, "")
    assert out.endswith("0 stored, 0 duplicates, 2 dead-lettered\n"), out
    with transaction(engine_from_url(db)) as conn:
        reasons = conn.execute(select(dead_letter.c.Reason)).scalars().all()
    # the first line starts with UTF-16's mark (FF FE): not UTF-8, as before this change
    assert any(r.startswith("not UTF-8 (invalid byte at 0 of ") for r in reasons), reasons


def test_ingest_reports_unpriced_and_unknown_models(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_v2: MakeEvent, db: str
) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", make_v2(), make_v2(Model="my-deployment"))
    status, out, _ = run(capsys, "ingest", str(path), "--db", db)
    assert status == 0
    assert out.splitlines() == [
        "2 received: 2 stored, 0 duplicates, 0 dead-lettered (1 unpriced)",
        "unknown models (estimated with o200k_base, priced only if a rate exists): my-deployment",
    ]


def test_ingest_progress_bar_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], events_file: Path, db: str
) -> None:
    status, out, err = run(capsys, "ingest", str(events_file), "--db", db, "--progress")
    assert status == 0
    assert out == "5 received: 4 stored, 0 duplicates, 1 dead-lettered\n"
    assert "ingest" in err


def test_ingest_as_a_real_subprocess(tmp_path: Path, events_file: Path) -> None:
    done = run_module(tmp_path, "ingest", events_file.name, "--db", "usage.db")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "5 received: 4 stored, 0 duplicates, 1 dead-lettered\n"
    engine = engine_from_url(str(tmp_path / "usage.db"))
    try:
        with transaction(engine) as conn:
            assert len(conn.execute(select(token_table.c.Id)).all()) == 4
    finally:
        engine.dispose()


def test_subprocess_default_database_is_relative_to_the_cwd(
    tmp_path: Path, events_file: Path
) -> None:
    done = run_module(tmp_path, "ingest", events_file.name)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "aoai_usage.db").is_file()


def test_subprocess_missing_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    done = run_module(tmp_path, "ingest", "missing.jsonl", "--db", "usage.db")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "error: no such file: missing.jsonl\n"


def test_missing_file_exits_1_with_one_line(capsys: pytest.CaptureFixture[str], db: str) -> None:
    status, out, err = run(capsys, "ingest", "nope-1.jsonl", "nope-2.jsonl", "--db", db)
    assert (status, out) == (1, "")
    assert_one_line_error(err)
    assert err == "error: no such file: nope-1.jsonl, nope-2.jsonl\n"


def test_ingest_model_map_and_default_model(
    capsys: pytest.CaptureFixture[str],
    db: str,
    tmp_path: Path,
    make_v2: MakeEvent,
    make_v1: MakeEvent,
) -> None:
    chat = [{"role": "user", "content": "Hello there"}]
    path = write_jsonl(
        tmp_path / "unnamed.jsonl",
        [
            make_v2(
                DeploymentName="chat-prod",
                Model=None,
                Usage=None,
                IsStreaming=True,
                Request={"messages": chat},
            ),
            make_v1(Request={"messages": chat, "stream": True}, ResponseString=""),
        ],
    )
    status, out, err = run(
        capsys,
        "ingest",
        str(path),
        "--db",
        db,
        "--model-map",
        "chat-prod=gpt-4o",
        "--default-model",
        "gpt-4.1-mini",
    )
    assert (status, err) == (0, "")
    assert out.startswith(
        "2 received: 2 stored, 0 duplicates, 0 dead-lettered (0 estimated, 2 prompt-only)"
    )
    status, out, err = run(capsys, "report", "--db", db, "--month", "2026-11")
    assert status == 0 and "Unpriced models" not in out


@pytest.mark.parametrize("bad", ["chat-prod", "=gpt-4o", "chat-prod="])
def test_ingest_model_map_needs_deployment_equals_model(
    capsys: pytest.CaptureFixture[str], db: str, events_file: Path, bad: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", str(events_file), "--db", db, "--model-map", bad])
    assert exit_info.value.code == 2
    assert f"expected DEPLOYMENT=MODEL, not {bad!r}" in capsys.readouterr().err


def test_a_folder_instead_of_a_file_says_so(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    status, out, err = run(capsys, "ingest", str(folder), "--db", db)
    assert (status, out) == (1, "")
    assert err == f"error: a folder, not a file: {folder} (name the files, e.g. DIR/*.jsonl)\n"


def test_unreachable_database_exits_non_zero_without_the_password(
    capsys: pytest.CaptureFixture[str], events_file: Path
) -> None:
    url = "postgresql+psycopg://u:secretpw@127.0.0.1:1/db"
    register_secret("u:secretpw")
    status, out, err = run(capsys, "ingest", str(events_file), "--db", url)
    assert "secretpw" not in out + err
    assert out == ""
    assert_one_line_error(err)
    if importlib.util.find_spec("psycopg") is None:
        assert status == 1
        assert err.startswith("error: no driver for postgresql+psycopg")
        assert "pip install 'apim-aoai-proxy[postgres]'" in err
    else:
        assert status == 3


@pytest.mark.parametrize("command", ["db init", "ingest"])
@pytest.mark.parametrize("below", ["sub/usage.db", "usage.db"])
def test_sqlite_path_under_a_regular_file_is_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, events_file: Path, below: str, command: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [*command.split(), *([str(events_file)] if command == "ingest" else [])]
    status, out, err = run(capsys, *argv, "--db", f"{blocker}/{below}")
    assert (status, out) == (1, "")
    assert_one_line_error(err)
    assert blocker.read_text() == ""


def test_subprocess_sqlite_path_under_a_regular_file_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = run_module(tmp_path, "db", "init", "--db", "a-file/sub/usage.db")
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_line_error(done.stderr)


def test_batch_size_zero_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], events_file: Path, db: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ingest", str(events_file), "--db", db, "--batch-size", "0"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument --batch-size: must be at least 1" in err
    assert not Path(db).exists()  # nothing was opened


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"apim-aoai-proxy \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


# ----------------------------------------------------------------------------- db


def test_db_init_twice_says_up_to_date(capsys: pytest.CaptureFixture[str], db: str) -> None:
    status, out, _ = run(capsys, "db", "init", "--db", db)
    assert status == 0
    assert out.startswith(f"database sqlite:///{db}: created table ")
    assert "created table ApimAoaiToken" in out
    assert "seeded 13 default rates" in out

    status, out, _ = run(capsys, "db", "init", "--db", db)
    assert (status, out) == (0, f"database sqlite:///{db}: up to date\n")


def test_db_url_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOAI_DB_URL", db)
    status, out, _ = run(capsys, "db", "init", "--no-default-rates")
    assert status == 0
    assert out.startswith(f"database sqlite:///{db}: ")
    assert "seeded" not in out
    assert Path(db).is_file()


# ----------------------------------------------------------------------------- rates


def test_rates_set_closes_the_open_rate_and_reprices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_v2: MakeEvent, db: str
) -> None:
    early = [make_v2(ExecTimeUTC="2026-11-05T10:00:00Z") for _ in range(2)]
    late = [make_v2(ExecTimeUTC="2026-11-15T10:00:00Z") for _ in range(3)]
    path = write_jsonl(tmp_path / "e.jsonl", *early, *late)
    assert run(capsys, "ingest", str(path), "--db", db)[0] == 0

    status, out, err = run(
        capsys,
        *("rates", "set", "gpt-4o", "--input", "3", "--output", "12", "--from", "2026-11-10"),
        *("--db", db),
    )
    assert (status, err) == (0, "")
    assert out == "1 rate(s) set; 3 stored call(s) repriced\n"

    status, out, _ = run(capsys, "rates", "list", "--db", db)
    assert status == 0
    gpt4o = lines_starting(out, "gpt-4o ")
    assert len(gpt4o) == 2
    assert gpt4o[0].startswith("gpt-4o 2.5 1.25 10 USD 2024-01-01 2026-11-10 Azure list price")
    assert gpt4o[1] == "gpt-4o 3 - 12 USD 2026-11-10 open set by hand"

    status, out, _ = run(capsys, "rates", "list", "--db", db, "--at", "2026-11-01")
    assert [line.split()[:6] for line in lines_starting(out, "gpt-4o ")] == [
        ["gpt-4o", "2.5", "1.25", "10", "USD", "2024-01-01"]
    ]

    engine = engine_from_url(db)
    try:
        with transaction(engine) as conn:
            costs = dict(
                (rid, cost)
                for rid, cost in conn.execute(select(token_table.c.RequestId, token_table.c.Cost))
            )
    finally:
        engine.dispose()
    for e in early:
        assert costs[e["RequestId"]] == 100 * 2.5e-6 + 50 * 10e-6
    for e in late:
        assert costs[e["RequestId"]] == pytest.approx(100 * 3e-6 + 50 * 12e-6, rel=1e-12)


def test_rates_list_on_a_database_without_rates(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    assert run(capsys, "db", "init", "--db", db, "--no-default-rates")[0] == 0
    status, out, _ = run(capsys, "rates", "list", "--db", db)
    assert status == 0
    assert out.startswith("no rates: every call is unpriced until you add some")


def test_rates_import_with_a_bad_line_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str
) -> None:
    csv_path = tmp_path / "rates.csv"
    csv_path.write_text(
        "model,input_per_1m,cached_input_per_1m,output_per_1m,currency,effective_from,effective_to,source\n"
        "my-model,1,,2,USD,2026-01-01,,ok\n"
        "other-model,1,,abc,USD,2026-01-01,,bad\n",
        "utf-8",
    )
    status, out, err = run(capsys, "rates", "import", str(csv_path), "--db", db)
    assert (status, out) == (1, "")
    assert_one_line_error(err)
    assert err == "error: rates line 3: output_per_1m is not a number: 'abc'\n"

    status, out, _ = run(capsys, "rates", "list", "--db", db)
    assert "my-model" not in out  # nothing of the file was applied


def test_rates_import_of_a_missing_file(capsys: pytest.CaptureFixture[str], db: str) -> None:
    status, _, err = run(capsys, "rates", "import", "nope.csv", "--db", db)
    assert status == 1
    assert_one_line_error(err)
    assert err.startswith("error: cannot read nope.csv")


def test_rates_export_round_trips_through_import(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first, second = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert run(capsys, "db", "init", "--db", first)[0] == 0
    assert run(capsys, "rates", "set", "gpt-4o", "--input", "3", "--output", "12",
               "--cached", "1.5", "--from", "2026-11-10", "--source", "EA, 2026", "--db", first)[0] == 0  # fmt: skip
    exported = tmp_path / "rates.csv"
    status, out, _ = run(capsys, "rates", "export", str(exported), "--db", first)
    assert (status, out) == (0, f"wrote {exported}\n")
    text = exported.read_text("utf-8")
    assert text.count("\n") == 15  # header + 13 defaults + the new gpt-4o period

    assert run(capsys, "db", "init", "--db", second, "--no-default-rates")[0] == 0
    status, out, _ = run(capsys, "rates", "import", str(exported), "--db", second)
    assert (status, out) == (0, "14 rate(s) set; 0 stored call(s) repriced\n")
    status, out, _ = run(capsys, "rates", "export", "--db", second)
    assert status == 0
    assert out == text


def test_rates_defaults_and_reprice(capsys: pytest.CaptureFixture[str], db: str) -> None:
    assert run(capsys, "db", "init", "--db", db, "--no-default-rates")[0] == 0
    status, out, _ = run(capsys, "rates", "defaults", "--db", db)
    assert (status, out) == (0, "13 rate(s) set; 0 stored call(s) repriced\n")
    status, out, _ = run(capsys, "rates", "reprice", "--db", db, "--model", "gpt-4o")
    assert (status, out) == (0, "0 stored call(s) repriced\n")


# ----------------------------------------------------------------------------- business units


def test_bu_set_import_and_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str
) -> None:
    assert run(capsys, "db", "init", "--db", db)[0] == 0
    status, out, _ = run(capsys, "bu", "list", "--db", db)
    assert (status, out) == (0, "no mappings: business unit = subscription name\n")

    status, out, _ = run(
        capsys,
        *("bu", "set", "sub-test-01", "Finance", "--name", "test-subscription"),
        *("--cost-centre", "CC-1100", "--budget", "50", "--db", db),
    )
    assert (status, out) == (0, "sub-test-01 → Finance\n")

    csv_path = tmp_path / "bu.csv"
    csv_path.write_text(
        "subscription_id,business_unit,subscription_name,cost_centre,monthly_budget\n"
        "sub-legal-01,Legal,legal-review,CC-5200,20\n"
        "sub-rnd-01,R&D,,,\n",
        "utf-8",
    )
    status, out, _ = run(capsys, "bu", "import", str(csv_path), "--db", db)
    assert (status, out) == (0, "2 subscription(s) mapped\n")

    status, out, _ = run(capsys, "bu", "list", "--db", db)
    assert status == 0
    assert [squeeze(line) for line in out.splitlines()] == [
        "sub-test-01 Finance CC-1100 test-subscription",
        "sub-legal-01 Legal CC-5200 legal-review",
        "sub-rnd-01 R&D -",
    ]


HOSTILE_BUS = {
    "sub-1": "\x1b[31mRED\x1b[0m\x1b]0;title\x07",
    "sub-2": "abc\u202edef\u2066",
    "sub-3": "a\nsub-9                                    Forged",
    "sub-4": "=HYPERLINK(1)\r",
}


def test_bu_list_escapes_names_and_pads_the_escaped_text(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    assert run(capsys, "db", "init", "--db", db)[0] == 0
    for sub, bu in HOSTILE_BUS.items():
        status, out, _ = run(
            capsys,
            "bu",
            "set",
            sub,
            bu,
            "--name",
            f"name\x9b2J{sub}",
            "--cost-centre",
            "C\tC",
            "--db",
            db,
        )
        assert status == 0 and "\x1b" not in out and out.count("\n") == 1
    status, out, _ = run(capsys, "bu", "list", "--db", db)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == len(HOSTILE_BUS)  # no forged row
    assert not any(ch in out for ch in "\x1b\x07\r\t\u202e\u2066\x9b")
    assert lines[0].split()[:2] == ["sub-1", "\\x1b[31mRED\\x1b[0m\\x1b]0;title\\x07"]
    assert lines[2].split()[:3] == ["sub-3", "a\\nsub-9", "Forged"]
    for line in lines:  # the columns line up on the escaped text
        assert line[40] == " " and line[41:].startswith(("\\", "abc", "a\\n", "=HYP"))
        assert "C\\tC" in line and line.endswith(f"name\\x9b2J{line.split()[0]}")


def test_bu_import_with_a_bad_line_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, db: str
) -> None:
    csv_path = tmp_path / "bu.csv"
    csv_path.write_text(
        "subscription_id,business_unit,monthly_budget\nsub-1,Finance,10\nsub-2,Legal,lots\n",
        "utf-8",
    )
    status, _, err = run(capsys, "bu", "import", str(csv_path), "--db", db)
    assert status == 1
    assert err == "error: BU CSV line 3: monthly_budget is not a number: 'lots'\n"


# ----------------------------------------------------------------------------- report, demo


def test_report_prints_a_table_by_business_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_v2: MakeEvent, db: str
) -> None:
    path = write_jsonl(
        tmp_path / "e.jsonl",
        make_v2(),
        make_v2(),
        make_v2(SubscriptionId="sub-legal-01", SubscriptionName="legal-review"),
        make_v2(SubscriptionId="sub-x", SubscriptionName="unmapped-sub"),
        make_v2(ExecTimeUTC="2026-10-31T23:59:59.999Z"),  # another month
    )
    assert run(capsys, "ingest", str(path), "--db", db)[0] == 0
    assert run(capsys, "bu", "set", "sub-test-01", "Finance", "--cost-centre", "CC-1", "--db", db)[0] == 0  # fmt: skip
    assert run(capsys, "bu", "set", "sub-legal-01", "Legal", "--db", db)[0] == 0

    status, out, err = run(capsys, "report", "--month", "2026-11", "--db", db)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("Chargeback 2026-11")
    assert lines[1].split()[:2] == ["Business", "unit"]
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert rows["Finance"] == [
        *("Finance", "CC-1", "2", "200", "100"),
        *("0.00", "0.00", "-", "USD", "-"),  # 0.0015 USD: cents, as finance reads it
    ]
    assert rows["Legal"][2:6] == ["1", "100", "50", "0.00"]
    assert rows["unmapped-sub"][2] == "1"  # fallback: the subscription name
    assert "Total: 0.00 USD" in lines


def test_report_escapes_business_units_from_mappings_and_subscription_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_v2: MakeEvent, db: str
) -> None:
    path = write_jsonl(
        tmp_path / "e.jsonl",
        make_v2(SubscriptionId="sub-1"),
        make_v2(SubscriptionId="sub-x", SubscriptionName="unmapped\x1b[2J\nTotal: 0.0000 USD"),
    )
    assert run(capsys, "ingest", str(path), "--db", db)[0] == 0
    assert run(capsys, "bu", "set", "sub-1", "\u202eecnaniF", "--db", db)[0] == 0
    status, out, err = run(capsys, "report", "--month", "2026-11", "--allocate", "10", "--db", db)
    assert (status, err) == (0, "")
    assert not any(ch in out for ch in "\x1b\u202e")
    lines = out.splitlines()
    assert {line.split()[0] for line in lines[3:5]} == {
        "\\u202eecnaniF",
        "unmapped\\x1b[2J\\nTotal:",
    }
    assert sum(line.startswith("Total: ") for line in lines) == 1  # not forged by a name
    allocation = next(line for line in lines if line.startswith("Allocation of"))
    assert (
        "\\u202eecnaniF 5.00" in allocation
        and "unmapped\\x1b[2J\\nTotal: 0.0000 USD 5.00" in allocation
    )


def test_report_without_a_month_uses_the_latest(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    make_v2: MakeEvent,
    db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AOAI_NOW", "2027-01-15T00:00:00Z")  # the latest month up to now
    assert run(capsys, "db", "init", "--db", db)[0] == 0
    status, out, _ = run(capsys, "report", "--db", db)
    assert (status, out) == (0, "no calls stored yet\n")
    path = write_jsonl(tmp_path / "e.jsonl", make_v2(ExecTimeUTC="2026-12-02T08:00:00Z"))
    assert run(capsys, "ingest", str(path), "--db", db)[0] == 0
    status, out, _ = run(capsys, "report", "--db", db)
    assert status == 0
    assert out.startswith("Chargeback 2026-12 ")


READ_COMMANDS = [
    ("bu", "list"),
    ("rates", "list"),
    ("rates", "export"),
    ("rates", "reprice"),
    ("report",),
    ("report", "--month", "2026-11"),
]


@pytest.mark.parametrize("argv", READ_COMMANDS)
def test_read_commands_on_a_missing_database_say_db_init(
    capsys: pytest.CaptureFixture[str], db: str, argv: tuple[str, ...]
) -> None:
    status, out, err = run(capsys, *argv, "--db", db)
    assert (status, out) == (1, "")
    assert_one_line_error(err)
    assert "db init" in err
    assert not Path(db).exists()  # a mistyped path does not leave an empty file behind


@pytest.mark.parametrize("argv", READ_COMMANDS)
def test_read_commands_on_a_database_without_tables_say_db_init(
    capsys: pytest.CaptureFixture[str], db: str, argv: tuple[str, ...]
) -> None:
    sqlite3.connect(db).close()  # an empty SQLite file
    status, out, err = run(capsys, *argv, "--db", db)
    assert (status, out) == (1, "")
    assert_one_line_error(err)
    assert "db init" in err


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "Nov 2026"])
def test_report_with_a_bad_month_exits_1(
    capsys: pytest.CaptureFixture[str], db: str, month: str
) -> None:
    assert run(capsys, "db", "init", "--db", db)[0] == 0
    status, out, err = run(capsys, "report", "--month", month, "--db", db)
    assert (status, out) == (1, "")
    assert err == f"error: month must look like 2026-11, not {month!r}\n"


SUMMARY = re.compile(r"(\d+) received: (\d+) stored, (\d+) duplicates, (\d+) dead-lettered")


def test_demo_prints_the_chargeback_table(capsys: pytest.CaptureFixture[str], db: str) -> None:
    status, out, err = run(capsys, "demo", "--db", db, "--sample-only")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"demo: ingesting the bundled sample events into sqlite:///{db}"
    summary = SUMMARY.match(lines[1])
    assert summary, lines[1]
    received, stored, duplicates, dead = map(int, summary.groups())
    assert received == stored + duplicates + dead
    assert stored > 200 and duplicates >= 1 and dead >= 1  # the sample has both on purpose
    assert lines[3].startswith("Chargeback 2026-11")
    units = {line.split()[0] for line in lines[6:10]}
    assert units == {"Finance", "Marketing", "R&D", "Legal"}
    assert any(line.startswith("Total: ") and " USD" in line for line in lines[10:])

    status, out, _ = run(capsys, "demo", "--db", db, "--sample-only")  # again: all duplicates
    assert status == 0
    again = SUMMARY.match(out.splitlines()[1])
    assert again
    assert tuple(map(int, again.groups())) == (received, 0, stored + duplicates, dead)


# ----------------------------------------------------------------------------- tokens


def test_tokens_verify_prints_both_hashes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "tokens", "verify")
    assert status == 0
    assert sorted(out.splitlines()) == sorted(
        f"{name}: sha256 {sha} (matches tiktoken's published hash)"
        for name, sha in PINNED_SHA256.items()
    )
    assert set(PINNED_SHA256) == {"o200k_base", "cl100k_base"}


# ----------------------------------------------------------------------------- documentation


def test_command_walker_finds_every_command() -> None:
    paths = command_paths(build_parser())
    assert len(paths) == len(set(paths))
    assert {
        "ingest",
        "db init",
        "rates list",
        "rates set",
        "rates import",
        "rates export",
        "rates defaults",
        "rates reprice",
        "bu set",
        "bu import",
        "bu list",
        "report",
        "demo",
        "tokens verify",
    } <= set(paths)
    assert "rates" not in paths  # only leaves: a group is not a command


def _cli_reference() -> str | None:
    if not README.is_file():
        return None
    text = README.read_text("utf-8")
    start = text.find("## CLI reference")
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.mark.skipif(
    _cli_reference() is None, reason="README.md has no '## CLI reference' section yet"
)
def test_every_command_is_documented_in_the_readme() -> None:
    section = _cli_reference() or ""
    missing = [
        cmd
        for cmd in command_paths(build_parser())
        if f"python -m aoai_helpers {cmd}" not in section
    ]
    assert missing == [], f"README.md '## CLI reference' does not show: {missing}"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--currency", "EURO"], "error: currency must be a 3-letter code, not 'EURO'\n"),
        (
            ["--from", "2026-02-01", "--to", "2026-01-01"],
            "error: effective_to must be after effective_from\n",
        ),
    ],
)
def test_rates_set_rejects_bad_values_in_one_line(
    capsys: pytest.CaptureFixture[str], db: str, extra: list[str], message: str
) -> None:
    status, out, err = run(
        capsys, "rates", "set", "gpt-4o", "--input", "1", "--output", "2", "--db", db, *extra
    )
    assert (status, out, err) == (1, "", message)


def test_a_missing_optional_package_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvicorn" or name.startswith("uvicorn."):
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith(("aoai_helpers.local", "uvicorn"))]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    status, out, err = run(capsys, "local", "status")
    assert (status, out) == (1, "")
    assert (
        err
        == "error: uvicorn is not installed; this command needs: pip install 'apim-aoai-proxy[local]'\n"
    )
