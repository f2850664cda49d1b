"""CLI: ``report`` — the month's per-BU chargeback; issue its statement; its coverage against
Azure's imported bill and the invoice's split; write the finance report (HTML), the statement
(XLSX/CSV) and the FOCUS file.

What it says about the statement (issued, drift, allocation) is
:mod:`aoai_helpers.analysis.narrative`, which notebook 04 uses too; the bill's lines are
:mod:`aoai_helpers.billing.text`'s. A month without calls is a one-line error naming the months
that have some.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from aoai_helpers.cli._argtypes import whole
from aoai_helpers.cli._options import existing_engine, with_db, with_spec
from aoai_helpers.exceptions import ConfigError

__all__ = ["add_report_parser", "cmd_report"]


def _span(months: list[str]) -> str:
    """``2026-09 … 2026-11 (3 months)``: the months with calls, in a few characters."""
    if len(months) <= 3:
        return ", ".join(months) or "none"
    return f"{months[0]} … {months[-1]} ({len(months)} months)"


def _grace(args: argparse.Namespace) -> timedelta:
    """The spec's ``reconcile.grace_hours`` (``--spec``, ``$AOAI_SPEC``, ``./gateway.yaml`` or
    the bundled sample) as a timedelta."""
    from aoai_helpers.config import spec_path
    from aoai_helpers.spec import load_spec

    return timedelta(hours=load_spec(spec_path(args.spec)).reconcile.grace_hours)


def _invoice_table(engine: Any, month: str) -> Any:
    from aoai_helpers.billing.figures import invoice_table
    from aoai_helpers.billing.invoice import allocate_invoice

    alloc = allocate_invoice(engine, month)
    return None if alloc is None else invoice_table(alloc)


def _write_files(args: argparse.Namespace, engine: Any, month: str, amount: Any) -> None:
    from aoai_helpers.analysis.export import write_csv, write_xlsx
    from aoai_helpers.analysis.statement import month_report
    from aoai_helpers.core.terminal import safe

    report = month_report(engine, month, allocate_amount=amount, top=args.top)
    if args.xlsx:
        invoice = _invoice_table(engine, month) if args.allocate_invoice else None
        print(f"wrote {safe(write_xlsx(args.xlsx, report, invoice=invoice))}")
    if args.csv:
        print(f"wrote {safe(write_csv(args.csv, report))}")


def _bill_lines(args: argparse.Namespace, engine: Any, month: str) -> list[str]:
    """Coverage against Azure's imported bill (when there is one) and, asked for, its split;
    asked for without a bill: a one-line error before anything is printed."""
    from sqlalchemy import inspect

    from aoai_helpers.db.tables import cost_line_table

    # never imported a bill: no billing modules to load (the plain report stays as quick)
    cov = None
    if inspect(engine).has_table(cost_line_table.name):
        from aoai_helpers.billing.invoice import coverage

        cov = coverage(engine, month)
    if cov is None:
        if args.allocate_invoice:
            raise ConfigError(
                f"no Azure bill imported for {month}: import its cost details first "
                "(aoai-helpers bill import FILE)"
            )
        return []
    from aoai_helpers.billing.invoice import allocate_invoice
    from aoai_helpers.billing.text import coverage_lines, invoice_allocation_lines

    lines = ["", *coverage_lines(cov, daily=args.daily_coverage)]
    if args.allocate_invoice:
        lines += ["", *invoice_allocation_lines(allocate_invoice(engine, month))]
    return lines


def _write_html(args: argparse.Namespace, engine: Any, month: str, amount: Any) -> None:
    from aoai_helpers.analysis.finance_html import write_finance_report
    from aoai_helpers.billing.figures import coverage_figures
    from aoai_helpers.core.terminal import safe

    path = write_finance_report(
        args.html,
        engine,
        month=month,
        organisation=args.organisation,
        coverage=coverage_figures(engine),
        allocate_amount=amount,
        top=args.top,
    )
    print(f"wrote {safe(path)}")


def _write_focus(args: argparse.Namespace, engine: Any, month: str) -> None:
    from aoai_helpers.analysis.focus import settings_from_spec, write_focus
    from aoai_helpers.config import spec_path
    from aoai_helpers.spec import load_spec

    settings = settings_from_spec(load_spec(spec_path(args.spec)))
    print(write_focus(args.focus, engine, month, settings=settings).describe())


def cmd_report(args: argparse.Namespace) -> int:
    import importlib

    from aoai_helpers.clock import month_bounds
    from aoai_helpers.core.amounts import parse_amount

    # the user's first mistakes to hear about, before the database is opened (and before the
    # statement modules are imported: an empty database answers without them)
    if args.month:
        month_bounds(args.month)
    amount = None if args.allocate is None else parse_amount(args.allocate)
    if args.xlsx:  # a missing extra is a one-line error (main) before any work
        importlib.import_module("openpyxl")
    from aoai_helpers.analysis.report import latest_month

    engine = existing_engine(args)
    month = args.month or latest_month(engine)
    issuing = bool(args.issue or args.reissue)
    if month is None:
        if issuing:
            raise ConfigError("no calls stored yet: there is no statement to issue")
        print("no calls stored yet")
        return 0
    from aoai_helpers.analysis.ledger import ledger
    from aoai_helpers.analysis.narrative import allocation_line, statement_lines
    from aoai_helpers.analysis.report import unpriced_models
    from aoai_helpers.analysis.statement import issue_statement, statement
    from aoai_helpers.analysis.text import render_table

    bill = _bill_lines(args, engine, month)
    if issuing:
        stmt = issue_statement(
            engine,
            month,
            reissue=args.reissue,
            grace=_grace(args),
            allow_provisional=args.allow_provisional,
        )
    else:
        stmt = statement(engine, month)
    if not stmt.lines and not stmt.issued:
        from aoai_helpers.analysis.finance_data import months_with_calls

        have = months_with_calls(engine)
        raise ConfigError(f"no calls in {month} (months with calls: {_span(have)})")
    print(render_table(stmt.lines, month, None if stmt.issued else unpriced_models(engine, month)))
    for line in statement_lines(engine, stmt, just_issued=issuing):
        print(line)
    if amount is not None:
        print(allocation_line(amount, stmt.lines, ledger(stmt.lines).single_currency()))
    for line in bill:
        print(line)
    if args.xlsx or args.csv:
        _write_files(args, engine, month, amount)
    if args.html:
        _write_html(args, engine, month, amount)
    if args.focus:
        _write_focus(args, engine, month)
    return 0


def add_report_parser(sub: Any) -> None:
    """Register ``report``."""
    p = with_db(
        sub.add_parser(
            "report",
            help="the per-BU chargeback of a month; issue its statement; write the finance report, XLSX/CSV, FOCUS",
        )
    )
    p.add_argument("--month", help="YYYY-MM (default: the month of the latest call)")
    _file_options(p)
    _money_options(p)
    issue = p.add_mutually_exclusive_group()
    issue.add_argument(
        "--issue",
        action="store_true",
        help="snapshot the month's figures as its issued statement (refused if already issued)",
    )
    issue.add_argument(
        "--reissue", action="store_true", help="replace the issued statement with the live figures"
    )
    p.add_argument(
        "--allow-provisional",
        action="store_true",
        help="issue even with provisional calls inside the reconcile grace window",
    )
    with_spec(
        p,
        "spec whose database and reconcile.grace_hours apply (default: $AOAI_SPEC, "
        "./gateway.yaml, else the bundled sample)",
    )
    p.set_defaults(func=cmd_report)


def _file_options(p: argparse.ArgumentParser) -> None:
    """``report``'s files: workbook, CSV, finance report, FOCUS."""
    p.add_argument(
        "--xlsx",
        metavar="FILE",
        help="also write the month as an Excel workbook (Summary, Notes, one sheet per BU; print-ready; needs the notebooks extra)",
    )
    p.add_argument(
        "--csv", metavar="FILE", help="also write the per-BU statement as CSV (one row per BU)"
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write the finance report: one offline page with every month in the database "
        "(this one first)",
    )
    p.add_argument(
        "--organisation", metavar="NAME", help="the organisation named in the HTML report's title"
    )
    p.add_argument(
        "--focus",
        metavar="FILE",
        help="also write the month as a FOCUS 1.4 cost and usage CSV (FinOps hubs, FinOps toolkit)",
    )
    p.add_argument(
        "--top", type=whole(1), default=10, help="top users per BU in the workbook (default 10)"
    )


def _money_options(p: argparse.ArgumentParser) -> None:
    """``report``'s splits: a fixed amount, the imported invoice, and coverage."""
    p.add_argument(
        "--allocate",
        metavar="AMOUNT",
        help="split a fixed monthly amount (e.g. provisioned throughput) across BUs by token share",
    )
    p.add_argument(
        "--allocate-invoice",
        action="store_true",
        help="split the month's imported Azure invoice (bill import) across BUs by token share "
        "per meter; usage that bypassed APIM stays its own line",
    )
    p.add_argument(
        "--daily-coverage",
        action="store_true",
        help="show coverage against the imported Azure bill per day, not only per meter",
    )
