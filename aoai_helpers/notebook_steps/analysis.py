"""Notebook 04: the month's chargeback for finance, one method per cell.

:class:`CostReport` opens the database of a :class:`~.target.Target` and a month (the latest
with calls by default) and gathers, once, everything the month's report shows through
:func:`aoai_helpers.analysis.statement.month_report` — all of it aggregated in the database. Its methods
return a :class:`~.shown.Shown` (tables with explanations) or a chart
(:func:`aoai_helpers.notebook_steps.display.chart`, offline in the HTML report); :meth:`CostReport.export`
writes the statement finance files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

import pandas as pd
from sqlalchemy.engine import Engine

from aoai_helpers.analysis import charts
from aoai_helpers.analysis.narrative import changed_since_issue, drift_line
from aoai_helpers.analysis.report import (
    MIXED,
    BuCharge,
    latest_month,
    month_bounds,
    unpriced_models,
)
from aoai_helpers.analysis.statement import MonthReport, month_report
from aoai_helpers.analysis.text import UNPRICED, totals_by_currency
from aoai_helpers.core.money import format_money
from aoai_helpers.db.engine import masked_url
from aoai_helpers.db.schema import require_schema
from aoai_helpers.exceptions import ConfigError
from aoai_helpers.notebook_steps.display import Chart, chart
from aoai_helpers.notebook_steps.shown import Shown
from aoai_helpers.notebook_steps.target import Target

__all__ = ["CostReport"]


def _money(value: float | Decimal | None, currency: str | None = None) -> str:
    """In the currency's minor units (as finance's report and statements show it); None is
    the word "unpriced"."""
    return format_money(value, currency)


def _amount(value: float | str | Decimal | None) -> float | str | Decimal | None:
    """``value`` if it is a non-zero amount to allocate, else None (0 or empty: none)."""
    return value if value and Decimal(str(value)) != 0 else None


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _pct(part: float, whole: float) -> str:
    return f"{part / whole * 100:.1f} %" if whole else "-"


@dataclass
class CostReport:
    """One month of one database, ready to show (see the module docstring)."""

    target: Target
    month: str
    engine: Engine = field(repr=False)

    @classmethod
    def open(cls, target: Target, month: str | None = None) -> CostReport:
        """The report for ``month`` (``YYYY-MM``; default: the latest month with calls)."""
        if month:
            month_bounds(month)  # a bad month is the first thing to hear about
        engine = require_schema(target.db_url)
        month = month or latest_month(engine)
        if month is None:
            raise ConfigError(
                f"no calls stored in {masked_url(target.db_url)} yet: run notebook 03, or ingest events"
            )
        return cls(target, month, engine)

    @cached_property
    def data(self) -> MonthReport:
        """Statement, budgets, model mix, daily trend and top users (queried once)."""
        return month_report(self.engine, self.month, top=10)

    @property
    def lines(self) -> list[BuCharge]:
        return self.data.statement.lines

    # ----------------------------------------------------------------- overview

    def overview(self) -> Shown:
        """The month at a glance: totals per currency, provisional share, unpriced calls."""
        lines = self.lines
        calls = sum(r.calls for r in lines)
        tokens = sum(r.total_tokens for r in lines)
        totals = totals_by_currency(lines)
        cost = sum(r.cost for r in lines)
        estimated = sum(r.estimated_cost for r in lines)
        unpriced = sum(r.unpriced_calls for r in lines)
        st = self.data.statement
        text = [
            f"database: {masked_url(self.target.db_url)}",
            f"statement: {st.describe()}",
            f"{calls:,} calls, {tokens:,} tokens, {len(lines)} business units",
            "cost: "
            + (
                ", ".join(_money(v, k) for k, v in totals.items() if k != UNPRICED) or "none priced"
            ),
            f"provisional share of cost: {_pct(estimated, cost)} (tokens counted by us, not yet "
            "given by the API or APIM's language-model log)",
        ]
        if unpriced:
            models = ", ".join(f"{m} ({n:,})" for m, n in unpriced_models(self.engine, self.month))
            text.append(f"{unpriced:,} unpriced call(s), not costed: {models} — add their rates")
        if MIXED in totals:
            text.append("some BUs have calls priced in more than one currency (MIXED)")
        return Shown(f"chargeback {self.month}", "warn" if unpriced else "ok", text)

    def __repr__(self) -> str:
        return self.overview().text()

    def _repr_html_(self) -> str:
        return self.overview()._repr_html_()

    # ----------------------------------------------------------------- sections

    def chargeback(self) -> Shown:
        """Per BU: calls, tokens, cost, currency, provisional share, unpriced calls."""
        frame = pd.DataFrame(
            [
                {
                    "business unit": r.business_unit,
                    "cost centre": r.cost_centre or "-",
                    "calls": f"{r.calls:,}",
                    "prompt tokens": f"{r.prompt_tokens:,}",
                    "completion tokens": f"{r.completion_tokens:,}",
                    "total tokens": f"{r.total_tokens:,}",
                    "cost": round(r.cost, 4),
                    "currency": r.currency or "-",
                    "provisional": _pct(r.estimated_cost, r.cost),
                    "unpriced calls": f"{r.unpriced_calls:,}",
                }
                for r in self.lines
            ]
        )
        notes = [f"statement {self.data.statement.describe()}"]
        changed = changed_since_issue(self.engine, self.month)
        if changed:
            notes.append(
                drift_line(changed, f"python -m aoai_helpers report --month {self.month} --reissue")
            )
        return Shown(
            f"chargeback per business unit, {self.month}", "ok", notes, tables=[("", frame)]
        )

    def cost_chart(self) -> Chart:
        return chart(charts.cost_by_bu_chart(self.lines, month=self.month))

    def by_model(self) -> Shown:
        """Per BU, model and deployment: calls, tokens (cached too), cost, provisional share."""
        frame = pd.DataFrame(
            [
                {
                    "business unit": m.business_unit,
                    "model": m.model,
                    "deployment": m.deployment or "-",
                    "calls": f"{m.calls:,}",
                    "prompt tokens": f"{m.prompt_tokens:,}",
                    "cached": f"{m.cached_tokens:,}",
                    "completion tokens": f"{m.completion_tokens:,}",
                    "cost": None if m.cost is None else round(m.cost, 4),
                    "currency": m.currency or "-",
                    "provisional": _pct(m.estimated_cost, m.cost or 0.0),
                    "unpriced calls": f"{m.unpriced_calls:,}",
                }
                for m in self.data.by_model
            ]
        )
        return Shown(f"by model and deployment, {self.month}", "ok", tables=[("", frame)])

    def model_chart(self) -> Chart:
        return chart(charts.model_mix_chart(self.data.by_model, month=self.month))

    def daily_chart(self) -> Chart:
        return chart(charts.daily_trend_chart(self.data.daily, month=self.month))

    def top_consumers(self, top: int = 10) -> Shown:
        """The subscriptions and users with the most cost (then tokens)."""
        from aoai_helpers.analysis.report import top_subscriptions, top_users

        if top < 1:
            raise ConfigError("top must be at least 1")
        subs = pd.DataFrame(
            [
                {
                    "subscription": s.subscription_name or s.subscription_id or "-",
                    "business unit": s.business_unit,
                    "calls": f"{s.calls:,}",
                    "tokens": f"{s.total_tokens:,}",
                    "cost": _money(s.cost, s.currency),
                }
                for s in top_subscriptions(self.engine, self.month, limit=top)
            ]
        )
        users = top_users(self.engine, self.month, limit=top)
        people = pd.DataFrame(
            [
                {
                    "user": u.user_name or "(not recorded)",
                    "email": u.user_email or "-",
                    "business unit": u.business_unit,
                    "calls": f"{u.calls:,}",
                    "tokens": f"{u.total_tokens:,}",
                    "cost": _money(u.cost, u.currency),
                }
                for u in users
            ]
        )
        return Shown(
            f"top {top} subscriptions and users, {self.month}",
            "ok",
            ["users are those APIM reports for the subscription (its owner, for a BU key)"],
            tables=[("subscriptions", subs), ("users", people)],
        )

    def budget_burn(self) -> Shown:
        """Each BU's cost against its monthly budget, with the month-end projection."""
        rows = self.data.budgets
        frame = pd.DataFrame(
            [
                {
                    "business unit": b.business_unit,
                    "budget": "-" if b.budget is None else _money(b.budget, b.currency),
                    "cost to date": _money(b.cost, b.currency),
                    "used": "-" if b.used is None else f"{b.used * 100:.0f} %",
                    "projected at month end": _money(b.projected, b.currency),
                    "projected use": "-"
                    if b.projected_used is None
                    else f"{b.projected_used * 100:.0f} %",
                    "status": b.status,
                }
                for b in rows
            ]
        )
        elapsed = rows[0].elapsed if rows else 0.0
        flagged = [b.business_unit for b in rows if b.status in ("over", "at risk")]
        return Shown(
            f"budget burn, {self.month} ({elapsed * 100:.0f} % of the month elapsed)",
            "warn" if flagged else "ok",
            [f"over or at risk: {', '.join(flagged)}"]
            if flagged
            else ["every BU with a budget is on track"],
            tables=[("", frame)],
        )

    def budget_chart(self) -> Chart:
        return chart(charts.budget_burn_chart(self.data.budgets, month=self.month))

    def allocation(self, amount: float | str | Decimal = 0, label: str = "fixed amount") -> Shown:
        """``amount`` split across the BUs by their share of tokens (largest remainder: exact)."""
        if not _amount(amount):
            return Shown(
                "no fixed amount to allocate",
                "info",
                ["set allocate_amount in the parameters (e.g. a month of provisioned throughput)"],
            )
        allocated = self.data.with_allocation(amount)
        parts = allocated.allocation or []
        frame = pd.DataFrame(
            [
                {
                    "business unit": a.business_unit,
                    "tokens": f"{a.basis:,}",
                    "share": f"{a.share * 100:.2f} %",
                    label: f"{a.amount:,.2f}",
                }
                for a in parts
            ]
        )
        return Shown(
            f"{label}: {allocated.allocation_amount:,.2f} allocated by token share",
            "ok",
            ["the parts add up to the amount exactly (rounded to cents by largest remainder)"],
            tables=[("", frame)],
            data=parts,
        )

    def export(
        self, allocate_amount: float | str | Decimal = 0, label: str = "fixed amount"
    ) -> Shown:
        """Write the statement: XLSX (summary + one sheet per BU) and CSV, into the out dir."""
        from aoai_helpers.analysis.export import write_csv, write_xlsx

        amount = _amount(allocate_amount)
        report = self.data.with_allocation(amount) if amount else self.data
        out = self.target.out_dir
        out.mkdir(parents=True, exist_ok=True)
        xlsx = write_xlsx(out / f"chargeback-{self.month}.xlsx", report)
        csv = write_csv(out / f"chargeback-{self.month}.csv", report)
        sheets = 1 + len(report.business_units())
        return Shown(
            f"statement for {self.month} written",
            "ok",
            [
                f"XLSX: {xlsx} (Summary + one sheet per BU: {sheets} sheets)",
                f"CSV: {csv} (one row per BU)",
                f"statement {report.statement.describe()}"
                + (
                    ""
                    if report.statement.issued
                    else " — issue it to freeze the month: "
                    f"python -m aoai_helpers report --month {self.month} --issue"
                ),
                *(
                    [f"includes {label}: {report.allocation_amount:,.2f} allocated by token share"]
                    if amount
                    else []
                ),
            ],
            data=(xlsx, csv),
        )

    # ----------------------------------------------------------------- Azure's bill, finance's page

    def invoice(self) -> Shown:
        """Azure's imported bill for the month (``bill import``) beside what the gateway
        recorded — coverage per meter — and the invoice split across BUs by token share."""
        from aoai_helpers.billing.invoice import allocate_invoice, coverage
        from aoai_helpers.billing.text import coverage_lines, invoice_allocation_lines

        cov = coverage(self.engine, self.month)
        if cov is None:
            return Shown(
                f"no Azure invoice imported for {self.month}",
                "warn",
                [
                    "import the month's cost details (Cost Management export, CSV) to see the "
                    "usage that bypassed APIM and split the invoice: "
                    "aoai-helpers bill import FILE"
                ],
            )
        lines = coverage_lines(cov, daily=False)
        lines += ["", *invoice_allocation_lines(allocate_invoice(self.engine, self.month))]
        bypassed = cov.bypassed_tokens > 0
        return Shown(
            f"Azure invoice {self.month}: {_ratio(cov.ratio)} of the billed tokens went through APIM",
            "warn" if bypassed else "ok",
            lines,
            data=cov,
        )

    def finance_report(
        self, organisation: str = "", allocate_amount: float | str | Decimal = 0
    ) -> Shown:
        """Write finance's report — the same figures as this notebook, every month of the
        database on one offline page (``report --html``) — to ``<out_dir>/report.html``."""
        from aoai_helpers.analysis.finance_html import write_finance_report
        from aoai_helpers.billing.figures import coverage_figures

        out = self.target.out_dir
        out.mkdir(parents=True, exist_ok=True)
        path = write_finance_report(
            out / "report.html",
            self.engine,
            month=self.month,
            organisation=organisation or None,
            coverage=coverage_figures(self.engine),
            allocate_amount=_amount(allocate_amount),
        )
        return Shown(
            f"finance report written: {path}",
            "ok",
            [
                "open it in a browser (one self-contained file, no network needed): every month "
                f"of the database, {self.month} first",
                f"the same figures from the command line: aoai-helpers report --month {self.month} "
                f"--html {path.name}",
            ],
            data=path,
        )
