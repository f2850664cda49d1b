"""The one business clock (aoai_helpers.clock): ``AOAI_NOW``, months, and who reads it.

Every decision that depends on today is checked here on the days that break date code: the
first minutes of a month, the 15th, the last day, a leap February and a year end — by setting
``AOAI_NOW``, as a user reproducing a month-end run would. A source scan holds the package to
one clock: no module but :mod:`aoai_helpers.clock` asks the system what time it is, except the
few that must (listed, with why).
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_run import run_cli
from sqlalchemy import select

from aoai_helpers import clock
from aoai_helpers.analysis.budget import budget_burn
from aoai_helpers.analysis.report import latest_month
from aoai_helpers.core.events import Usage
from aoai_helpers.db.business_units import BusinessUnit, set_bu
from aoai_helpers.db.engine import transaction
from aoai_helpers.db.tables import token_table
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.spec import load_spec
from aoai_helpers.synthetic.rows import generate

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aoai_helpers"

#: (instant, its month, the month before, share of its month elapsed)
DAYS = [
    (datetime(2027, 3, 1, 0, 5, tzinfo=UTC), "2027-03", "2027-02", 5 / (31 * 24 * 60)),
    (datetime(2027, 3, 15, 12, 0, tzinfo=UTC), "2027-03", "2027-02", 14.5 / 31),
    (datetime(2027, 3, 31, 23, 59, tzinfo=UTC), "2027-03", "2027-02", 1 - 1 / (31 * 24 * 60)),
    (datetime(2028, 2, 29, 12, 0, tzinfo=UTC), "2028-02", "2028-01", 28.5 / 29),  # leap
    (datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC), "2027-01", "2026-12", 30 / (31 * 86400)),
    (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), "2026-12", "2026-11", 1 - 1 / (31 * 86400)),
]
DAY_IDS = [f"{d[0]:%Y-%m-%dT%H:%M:%S}" for d in DAYS]


def _set(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    monkeypatch.setenv(clock.ENV_VAR, when.isoformat().replace("+00:00", "Z"))


# ----------------------------------------------------------------------------- AOAI_NOW


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-03-01T00:05:00Z", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
        ("2027-03-01T00:05:00.250z", datetime(2027, 3, 1, 0, 5, 0, 250_000, tzinfo=UTC)),
        ("2027-03-01T01:05:00+01:00", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
        ("2027-02-28T19:05:00-05:00", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
        ("2027-03-01T00:05:00", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),  # no offset: UTC
        ("2027-03-01", datetime(2027, 3, 1, tzinfo=UTC)),
        ("  2028-02-29T23:59:59Z ", datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_aoai_now_sets_the_clock(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: datetime
) -> None:
    monkeypatch.setenv("AOAI_NOW", text)
    assert clock.now() == expected and clock.now().tzinfo is UTC
    assert clock.utcnow() == expected.replace(tzinfo=None)


@pytest.mark.parametrize("text", ["garbage", "2027-13-01", "2027-02-29T00:00:00Z", "1700000000"])
def test_a_bad_aoai_now_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("AOAI_NOW", text)
    with pytest.raises(ConfigError, match=r"^AOAI_NOW must be an ISO 8601 time"):
        clock.now()


def test_the_clock_stands_still_while_set_and_follows_the_system_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AOAI_NOW", "2027-03-01T00:05:00Z")
    assert clock.now() == clock.now() == datetime(2027, 3, 1, 0, 5, tzinfo=UTC)
    assert clock.system_now() > datetime(2026, 11, 30, tzinfo=UTC)  # never the business clock
    monkeypatch.setenv("AOAI_NOW", "2027-04-01T00:00:00Z")  # read again on every call
    assert clock.now() == datetime(2027, 4, 1, tzinfo=UTC)
    monkeypatch.delenv("AOAI_NOW")
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)


# ----------------------------------------------------------------------------- months


@pytest.mark.parametrize(("now", "month", "previous", "elapsed"), DAYS, ids=DAY_IDS)
def test_months_on_the_days_that_break_date_code(
    monkeypatch: pytest.MonkeyPatch, now: datetime, month: str, previous: str, elapsed: float
) -> None:
    _set(monkeypatch, now)
    assert clock.current_month() == month
    assert clock.previous_month() == previous
    assert clock.is_complete(previous) and not clock.is_complete(month)
    start, end = clock.month_bounds(month)
    assert start <= clock.utcnow() < end
    assert (clock.utcnow() - start) / (end - start) == pytest.approx(elapsed)


def test_month_bounds() -> None:
    assert clock.month_bounds("2028-02") == (datetime(2028, 2, 1), datetime(2028, 3, 1))
    assert clock.month_bounds("2026-12") == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert clock.previous_month("2027-01") == "2026-12"
    assert clock.month_of(datetime(2026, 12, 31, 23, 30, tzinfo=timezone(-timedelta(hours=2)))) == (
        "2027-01"
    )
    for bad in ("2026-13", "2026-1", "Nov 2026", ""):
        with pytest.raises(ConfigError, match="month must look like 2026-11"):
            clock.month_bounds(bad)


# ----------------------------------------------------------------------------- who reads it


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return Usage(prompt, completion, prompt + completion).as_dict()


@pytest.mark.parametrize(("now", "month", "previous", "elapsed"), DAYS, ids=DAY_IDS)
def test_budget_burn_is_month_to_date_by_the_clock(
    engine, make_v2, ingest_events, monkeypatch, now, month, previous, elapsed
) -> None:
    """The month in progress projects cost / elapsed; the month before is closed (actual)."""
    with transaction(engine) as conn:
        set_bu(conn, [BusinessUnit("sub-a", "Finance", None, "CC-1", 1.0)])
    start, _ = clock.month_bounds(month)
    prev_start, _ = clock.month_bounds(previous)
    ingest_events(
        engine,
        make_v2(
            SubscriptionId="sub-a",
            ExecTimeUTC=f"{start:%Y-%m-%d}T00:00:01Z",
            Usage=_usage(1000, 100),
        ),
        make_v2(
            SubscriptionId="sub-a",
            ExecTimeUTC=f"{prev_start:%Y-%m-%d}T08:00:00Z",
            Usage=_usage(1000, 100),
        ),
    )
    _set(monkeypatch, now)
    (current,) = budget_burn(engine, month)
    assert current.elapsed == pytest.approx(elapsed)
    assert current.projected == pytest.approx(current.cost / elapsed)
    # on the 1st at 00:05 a handful of calls project far over any budget: "at risk", not "over"
    assert current.status == ("at risk" if current.projected > 1.0 else "on track")
    (closed,) = budget_burn(engine, previous)
    assert (closed.elapsed, closed.projected) == (1.0, closed.cost)


@pytest.mark.parametrize(("now", "month", "previous", "elapsed"), DAYS, ids=DAY_IDS)
def test_the_default_report_month_is_the_latest_with_calls_up_to_now(
    engine, make_v2, ingest_events, monkeypatch, now, month, previous, elapsed
) -> None:
    _set(monkeypatch, now)
    assert latest_month(engine) is None
    prev_start, _ = clock.month_bounds(previous)
    ingest_events(engine, make_v2(ExecTimeUTC=f"{prev_start:%Y-%m-%d}T10:00:00Z"))
    assert latest_month(engine) == previous  # nothing yet this month: the last month with calls
    just_now = (now - timedelta(seconds=1)).isoformat(timespec="milliseconds")
    ingest_events(engine, make_v2(ExecTimeUTC=just_now.replace("+00:00", "Z")))
    assert latest_month(engine) == month
    # a call stamped after the clock (the clock set back) does not become the default
    ingest_events(engine, make_v2(ExecTimeUTC="2031-06-01T00:00:00Z"))
    assert latest_month(engine) == month


def test_ingested_at_is_the_physical_write_time_whatever_the_clock(
    engine, make_v2, ingest_events, token_rows, monkeypatch
) -> None:
    """``IngestedAtUTC`` tells a writer's rows from a concurrent writer's: never a standing clock."""
    _set(monkeypatch, DAYS[0][0])
    before = clock.system_utcnow()
    ingest_events(engine, make_v2())
    (row,) = token_rows(engine)
    assert before <= row["IngestedAtUTC"] <= clock.system_utcnow()


SPEC = load_spec(ROOT / "examples" / "gateway.yaml")


@pytest.mark.parametrize(("now", "month", "previous", "elapsed"), DAYS, ids=DAY_IDS)
def test_generate_fills_complete_months_only(
    engine, monkeypatch, now, month, previous, elapsed
) -> None:
    """``local generate`` never writes calls dated in the future."""
    _set(monkeypatch, now)
    with pytest.raises(ConfigError, match=rf"^{month} is not over .* e\.g\. --month {previous}$"):
        generate(engine, SPEC, rows=10, month=month, workers=0)
    generate(engine, SPEC, rows=200, month=previous, workers=0)
    with transaction(engine) as conn:
        latest = max(r[0] for r in conn.execute(select(token_table.c.ExecTimeUTC)))
    assert latest < now.replace(tzinfo=None)


def test_commands_read_aoai_now(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'g.db'}"
    made = run_cli(
        "local", "generate", "--rows", "50", "--db", db, env={"AOAI_NOW": "2027-01-01T00:00:30Z"}
    )
    assert made.returncode == 0, made.stderr
    assert "generating 50 calls of 2026-12" in made.stdout  # the last complete month
    early = run_cli("report", "--db", db, env={"AOAI_NOW": "2026-11-30T00:00:00Z"})
    assert early.returncode == 0 and "no calls" in early.stdout, early.stderr  # all later
    report = run_cli("report", "--db", db, env={"AOAI_NOW": "2027-01-01T00:00:30Z"})
    assert report.returncode == 0 and "Chargeback 2026-12" in report.stdout, report.stderr
    bad = run_cli("report", "--db", db, env={"AOAI_NOW": "next tuesday"})
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == (
        "error: AOAI_NOW must be an ISO 8601 time such as 2027-03-01T00:05:00Z, "
        "not 'next tuesday'\n"
    )


# ----------------------------------------------------------------------------- one clock

#: Modules that read the system clock themselves, and why (everything else uses the clock).
SYSTEM_CLOCK_READERS = {
    "clock.py": "the clock itself",
    "eventlog/checkpoints.py": "Event Hubs partition-ownership leases are compared with other hosts' times",
    "eventlog/sharing.py": "a local consumer's member id begins with its physical start time",
    "azure/dryrun.py": "the expiry of the dry run's fake access token",
    "local/simulator.py": "AOAI's per-minute rate-limit window and the `created` of its replies",
}
_SYSTEM_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "gmtime"),
    ("time", "localtime"),
}


def _system_clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (  # a call or a reference (``now=time.time``)
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in _SYSTEM_CALLS
        ):
            found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_only_the_clock_reads_the_system_time() -> None:
    readers = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        reads = _system_clock_reads(path)
        if reads:
            readers[path.relative_to(PACKAGE).as_posix()] = reads
    assert set(readers) == set(SYSTEM_CLOCK_READERS), readers
    # and the scan finds what it looks for
    assert [r.split()[0] for r in _system_clock_reads(PACKAGE / "clock.py")] == ["datetime.now"]


def test_every_sample_event_is_in_the_demo_month() -> None:
    """``make demo`` reports :data:`SAMPLE_MONTH` whatever the date: the bundled history's month."""
    from aoai_helpers.core.events import UsageEvent, parse_event
    from aoai_helpers.pipeline.service import SAMPLE_MONTH, sample_path

    start, end = clock.month_bounds(SAMPLE_MONTH)
    times = []
    for line in sample_path("sample_events.jsonl").read_bytes().splitlines():
        parsed = parse_event(line)
        if isinstance(parsed, UsageEvent):
            times.append(parsed.exec_time)
    assert len(times) > 300
    assert all(start <= t < end for t in times)
