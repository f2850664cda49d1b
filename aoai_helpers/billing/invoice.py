"""Azure's bill beside the gateway's record: coverage, and the invoice split across BUs.

**Coverage** (:func:`coverage`): per day and model / token kind, the tokens Azure billed
(``AzureCostLine``, :mod:`aoai_helpers.billing.store`) beside the tokens the gateway recorded
(the daily rollup ``AoaiUsageDaily``: input = prompt - cached tokens, cached_input = cached
tokens, output = completion tokens; the rollup's model names normalised by
:func:`aoai_helpers.core.model_names.normalize_model`, as the meters are). The ratio is
recorded / billed; billed - recorded is usage that reached Azure OpenAI without passing APIM
(negative: the gateway counted more than Azure billed, e.g. estimates on failed calls).

**Invoice allocation** (:func:`allocate_invoice`): the month's invoiced Azure OpenAI cost split
across business units, exact to the minor unit (:mod:`aoai_helpers.core.money`):

* per meter — a (model, token kind, currency) of the bill, its lines summed — the weights are
  each BU's recorded tokens of that model and kind, plus one *unattributed* weight for the
  billed tokens the gateway did not record (``max(0, billed - recorded)``); a meter nobody
  recorded goes to unattributed whole;
* cost that is not tokens (provisioned throughput hours, fine-tuning hosting and training)
  is its own line, *not attributable by tokens* — never spread silently;
* per currency, the total is rounded once, and split over every (meter, BU or unattributed)
  cell by the cell's exact amount (largest remainder; the cells' exact amounts are the first
  level, :func:`~aoai_helpers.core.money.split_exact` the second); a BU's line is the sum of
  its cells, so the lines add up to the rounded invoice total exactly.

A business unit is the same as in :mod:`aoai_helpers.analysis.report`: the
``BusinessUnitMap`` entry of the call's subscription, else its name, else its id. Which
import is "the invoice": ``actual`` cost if the month has one, else ``usage`` (older EA
files), else ``amortized``; or the one asked for. Both functions answer None when no bill of
the month is imported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import BigInteger, cast, func, literal_column, select
from sqlalchemy.engine import Connection, Engine

from aoai_helpers.analysis.report import NO_SUBSCRIPTION
from aoai_helpers.billing.meters import TOKEN_KINDS, TokenKind
from aoai_helpers.billing.store import COST_TYPES, has_bill_tables
from aoai_helpers.clock import month_bounds
from aoai_helpers.core.model_names import normalize_model
from aoai_helpers.core.money import minor_units, round_money, split_exact, to_decimal
from aoai_helpers.db.engine import as_date, transaction
from aoai_helpers.db.tables import bu_map, cost_line_table, daily_table
from aoai_helpers.exceptions import ConfigError

__all__ = [
    "MIXED",
    "NOT_BY_TOKENS",
    "UNATTRIBUTED",
    "AllocationCell",
    "Coverage",
    "CoverageRow",
    "InvoiceAllocation",
    "InvoiceLine",
    "allocate_invoice",
    "coverage",
    "invoice_cost_type",
]

#: The line of billed tokens the gateway did not record (usage that bypassed APIM).
UNATTRIBUTED: Final = "(unattributed: bypassed APIM)"
#: The line of cost that is not tokens (provisioned hours, fine-tuning hosting, training).
NOT_BY_TOKENS: Final = "(not attributable by tokens)"
#: The currency of a coverage row billed in more than one currency.
MIXED: Final = "MIXED"
#: Which import is the invoice, in order of preference.
_PREFERENCE: Final = ("actual", "usage", "amortized")

LineKind = Literal["bu", "unattributed", "not_by_tokens"]


class _Ratios:
    """What coverage derives from ``billed_tokens`` and ``recorded_tokens`` (a row's fields, a
    month's sums)."""

    __slots__ = ()
    if TYPE_CHECKING:  # a field of the row, a property of the month

        @property
        def billed_tokens(self) -> int: ...

        @property
        def recorded_tokens(self) -> int: ...

    @property
    def ratio(self) -> float | None:
        """Recorded / billed tokens; None when nothing was billed."""
        return self.recorded_tokens / self.billed_tokens if self.billed_tokens else None

    @property
    def bypassed_tokens(self) -> int:
        """Billed - recorded: tokens that did not pass the gateway (negative: it counted more)."""
        return self.billed_tokens - self.recorded_tokens


@dataclass(frozen=True, slots=True)
class CoverageRow(_Ratios):
    """Billed beside recorded tokens of one model and token kind (on ``day``; None: the month)."""

    day: date | None
    model: str
    kind: TokenKind
    billed_tokens: int
    recorded_tokens: int
    billed_cost: Decimal | None  # exact; None when billed in more than one currency
    currency: str | None  # None: nothing billed; MIXED: more than one currency


@dataclass(frozen=True, slots=True)
class Coverage(_Ratios):
    """A month's coverage: per day, per meter, and in total (module docstring)."""

    month: str
    cost_type: str
    rows: list[CoverageRow]  # per day, model and kind (by day, model, kind)
    meters: list[CoverageRow]  # per model and kind over the month (day None)
    billed_cost: dict[str, Decimal]  # currency → the month's Azure OpenAI cost, exact
    non_token_cost: dict[str, Decimal]  # currency → the part that is not tokens

    @property
    def billed_tokens(self) -> int:
        return sum(m.billed_tokens for m in self.meters)

    @property
    def recorded_tokens(self) -> int:
        return sum(m.recorded_tokens for m in self.meters)


@dataclass(frozen=True, slots=True)
class AllocationCell:
    """One meter's part for one BU (or the unattributed or not-by-tokens line)."""

    currency: str
    model: str | None  # None: the cost that is not tokens
    kind: TokenKind | None
    business_unit: str  # a BU, UNATTRIBUTED or NOT_BY_TOKENS
    tokens: int  # the weight: recorded tokens (unattributed: billed - recorded)
    exact: Decimal  # the meter's cost x the cell's token share, unrounded
    amount: Decimal  # rounded to the minor unit; the cells add up to the invoice total


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One BU's share of the invoice in one currency (or the unattributed / not-by-tokens line)."""

    business_unit: str
    cost_centre: str | None
    kind: LineKind
    currency: str
    tokens: int
    exact: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceAllocation:
    """The month's invoice split across BUs; per currency the lines add up to ``totals``."""

    month: str
    cost_type: str
    totals: dict[str, Decimal]  # currency → the invoice total, rounded once
    lines: list[InvoiceLine]  # by currency, BUs (most first), unattributed, not by tokens
    cells: list[AllocationCell]  # by currency, meter, BU

    def lines_in(self, currency: str) -> list[InvoiceLine]:
        """The lines of one currency."""
        return [line for line in self.lines if line.currency == currency]


# ----------------------------------------------------------------------------- reading


def invoice_cost_type(conn: Connection, month: str, cost_type: str | None = None) -> str | None:
    """The cost type of ``month`` taken as its invoice (module docstring); None when none is
    imported. ConfigError for an unknown ``cost_type``."""
    if cost_type is not None and cost_type not in COST_TYPES:
        raise ConfigError(f"cost type must be one of {', '.join(COST_TYPES)}, not {cost_type!r}")
    t = cost_line_table.c
    present = {
        r[0] for r in conn.execute(select(t.CostType).where(t.BillingMonth == month).distinct())
    }
    wanted = (cost_type,) if cost_type else _PREFERENCE
    return next((c for c in wanted if c in present), None)


def _bill(conn: Connection, month: str, cost_type: str) -> list[Any]:
    t = cost_line_table.c
    stmt = select(t.UsageDate, t.ModelName, t.TokenKind, t.Tokens, t.Cost, t.Currency).where(
        t.BillingMonth == month, t.CostType == cost_type
    )
    return list(conn.execute(stmt))


def _recorded(
    conn: Connection, month: str
) -> list[tuple[date, str, str, str | None, dict[str, int]]]:
    """(day, model, BU, cost centre, tokens per kind) of the month's rollup rows."""
    start, end = month_bounds(month)
    d = daily_table.c

    def absent(column: Any) -> Any:
        return func.nullif(column, literal_column("''"))

    bu = func.coalesce(
        bu_map.c.BusinessUnit,
        absent(d.SubscriptionName),
        absent(d.SubscriptionId),
        literal_column(f"'{NO_SUBSCRIPTION}'"),
    ).label("bu")

    def total(column: Any) -> Any:
        return func.sum(cast(column, BigInteger))

    stmt = (
        select(
            d.ExecDateUTC,
            d.ModelName,
            bu,
            func.max(bu_map.c.CostCentre).label("cc"),
            total(d.PromptTokens).label("prompt"),
            total(d.CachedTokens).label("cached"),
            total(d.CompletionTokens).label("completion"),
        )
        .select_from(daily_table.outerjoin(bu_map, bu_map.c.SubscriptionId == d.SubscriptionId))
        .where(d.ExecDateUTC >= start, d.ExecDateUTC < end)
        .group_by(d.ExecDateUTC, d.ModelName, bu)
    )
    out = []
    for r in conn.execute(stmt):
        prompt, cached, completion = int(r.prompt or 0), int(r.cached or 0), int(r.completion or 0)
        kinds = {"input": prompt - cached, "cached_input": cached, "output": completion}
        out.append(
            (as_date(r.ExecDateUTC), normalize_model(r.ModelName or None).name, r.bu, r.cc, kinds)
        )
    return out


# ----------------------------------------------------------------------------- coverage


def _coverage_row(
    day: date | None, model: str, kind: TokenKind, acc: dict[str, Any]
) -> CoverageRow:
    costs: dict[str, Decimal] = acc["costs"]
    single = len(costs) == 1
    return CoverageRow(
        day=day,
        model=model,
        kind=kind,
        billed_tokens=acc["billed"],
        recorded_tokens=acc["recorded"],
        billed_cost=next(iter(costs.values())) if single else None,
        currency=(next(iter(costs)) if single else MIXED) if costs else None,
    )


def coverage(engine: Engine, month: str, *, cost_type: str | None = None) -> Coverage | None:
    """The month's billed beside recorded tokens (module docstring); None when no bill of the
    month is imported."""
    month_bounds(month)
    with transaction(engine) as conn:
        if not has_bill_tables(conn):
            return None
        chosen = invoice_cost_type(conn, month, cost_type)
        if chosen is None:
            return None
        bill = _bill(conn, month, chosen)
        recorded = _recorded(conn, month)

    def blank() -> dict[str, Any]:
        return {"billed": 0, "recorded": 0, "costs": {}}

    daily: dict[tuple[date, str, str], dict[str, Any]] = defaultdict(blank)
    monthly: dict[tuple[str, str], dict[str, Any]] = defaultdict(blank)
    billed_cost: dict[str, Decimal] = {}
    non_token: dict[str, Decimal] = {}
    for line in bill:
        cost = to_decimal(line.Cost) or Decimal(0)
        billed_cost[line.Currency] = billed_cost.get(line.Currency, Decimal(0)) + cost
        if line.ModelName is None:
            non_token[line.Currency] = non_token.get(line.Currency, Decimal(0)) + cost
            continue
        for acc in (daily[(as_date(line.UsageDate), line.ModelName, line.TokenKind)],
                    monthly[(line.ModelName, line.TokenKind)]):  # fmt: skip
            acc["billed"] += int(line.Tokens or 0)
            acc["costs"][line.Currency] = acc["costs"].get(line.Currency, Decimal(0)) + cost
    for day, model, _bu, _cc, kinds in recorded:
        for kind, tokens in kinds.items():
            if tokens:
                daily[(day, model, kind)]["recorded"] += tokens
                monthly[(model, kind)]["recorded"] += tokens
    order: dict[str, int] = {k: i for i, k in enumerate(TOKEN_KINDS)}
    rows = [
        _coverage_row(day, model, kind, acc)  # type: ignore[arg-type]
        for (day, model, kind), acc in sorted(
            daily.items(), key=lambda i: (i[0][0], i[0][1], order[i[0][2]])
        )
    ]
    meters = [
        _coverage_row(None, model, kind, acc)  # type: ignore[arg-type]
        for (model, kind), acc in sorted(monthly.items(), key=lambda i: (i[0][0], order[i[0][1]]))
    ]
    return Coverage(
        month,
        chosen,
        rows,
        meters,
        dict(sorted(billed_cost.items())),
        dict(sorted(non_token.items())),
    )


# ----------------------------------------------------------------------------- allocation


def _split(total: Decimal, exacts: Sequence[Decimal], currency: str) -> list[Decimal]:
    """``total`` (already rounded) over ``exacts`` by largest remainder, the parts adding up
    to it: :func:`split_exact` when the amounts share a sign (refunds are negative)."""
    zero = round_money(0, currency)
    if not any(exacts):
        return [zero for _ in exacts]
    if all(e >= 0 for e in exacts):
        return split_exact(total, list(exacts), currency)
    if all(e <= 0 for e in exacts):
        return [-p for p in split_exact(-total, [-e for e in exacts], currency)]
    # mixed signs: floor each in minor units, then one more unit to the largest remainders
    places = minor_units(currency)
    units = [e.scaleb(places) for e in exacts]
    parts = [int(u.to_integral_value(rounding=ROUND_FLOOR)) for u in units]
    left = int(total.scaleb(places)) - sum(parts)
    order = sorted(range(len(units)), key=lambda i: (-(units[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return [Decimal(p).scaleb(-places) for p in parts]


def allocate_invoice(
    engine: Engine, month: str, *, cost_type: str | None = None
) -> InvoiceAllocation | None:
    """The month's invoiced Azure OpenAI cost split across BUs (module docstring); None when
    no bill of the month is imported."""
    month_bounds(month)
    with transaction(engine) as conn:
        if not has_bill_tables(conn):
            return None
        chosen = invoice_cost_type(conn, month, cost_type)
        if chosen is None:
            return None
        bill = _bill(conn, month, chosen)
        recorded = _recorded(conn, month)
    by_bu: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    centres: dict[str, str | None] = {}
    for _, model, bu, cc, kinds in recorded:
        centres[bu] = centres.get(bu) or cc
        for kind, tokens in kinds.items():
            by_bu[(model, kind)][bu] += tokens
    # currency → meter → [billed tokens, exact cost]; currency → non-token cost
    meters: dict[str, dict[tuple[str, str], list[Any]]] = defaultdict(dict)
    non_token: dict[str, Decimal] = defaultdict(Decimal)
    for line in bill:
        cost = to_decimal(line.Cost) or Decimal(0)
        if line.ModelName is None:
            non_token[line.Currency] += cost
            continue
        acc = meters[line.Currency].setdefault((line.ModelName, line.TokenKind), [0, Decimal(0)])
        acc[0] += int(line.Tokens or 0)
        acc[1] += cost
    totals: dict[str, Decimal] = {}
    cells: list[AllocationCell] = []
    for currency in sorted(set(meters) | set(non_token)):
        drafts: list[tuple[str | None, str | None, str, int, Decimal]] = []
        for (model, kind), (billed, cost) in sorted(meters[currency].items()):
            weights = {bu: t for bu, t in sorted(by_bu.get((model, kind), {}).items()) if t > 0}
            weights[UNATTRIBUTED] = max(0, billed - sum(weights.values()))
            whole = sum(weights.values())
            if whole == 0:
                weights, whole = {UNATTRIBUTED: 0}, 0
            for bu, w in weights.items():
                exact = cost * w / whole if whole else cost
                if w or not whole:
                    drafts.append((model, kind, bu, w, exact))
        if currency in non_token:
            drafts.append((None, None, NOT_BY_TOKENS, 0, non_token[currency]))
        # the invoice's own total (its lines' costs), not the sum of the divided cells: those
        # are cut at 28 digits and may fall a hair under a half cent
        billed_total = sum((cost for _, cost in meters[currency].values()), Decimal(0))
        totals[currency] = round_money(billed_total + non_token.get(currency, Decimal(0)), currency)
        amounts = _split(totals[currency], [d[4] for d in drafts], currency)
        cells.extend(
            AllocationCell(currency, m, k, bu, w, e, a)  # type: ignore[arg-type]
            for (m, k, bu, w, e), a in zip(drafts, amounts, strict=True)
        )
    return InvoiceAllocation(month, chosen, totals, _lines(cells, centres), cells)


def _lines(cells: list[AllocationCell], centres: dict[str, str | None]) -> list[InvoiceLine]:
    acc: dict[tuple[str, str], list[Any]] = {}
    for c in cells:
        entry = acc.setdefault((c.currency, c.business_unit), [0, Decimal(0), Decimal(0)])
        entry[0] += c.tokens
        entry[1] += c.exact
        entry[2] += c.amount
    special: dict[str, LineKind] = {UNATTRIBUTED: "unattributed", NOT_BY_TOKENS: "not_by_tokens"}
    rank = {"bu": 0, "unattributed": 1, "not_by_tokens": 2}
    lines = [
        InvoiceLine(
            business_unit=bu,
            cost_centre=centres.get(bu),
            kind=special.get(bu, "bu"),
            currency=currency,
            tokens=tokens,
            exact=exact,
            amount=amount,
        )
        for (currency, bu), (tokens, exact, amount) in acc.items()
    ]
    lines.sort(key=lambda x: (x.currency, rank[x.kind], -x.amount, x.business_unit))
    return lines
