"""A month's money as the statement shows it: exact decimals, rounded per currency. Pure.

The per-BU figures (:class:`~aoai_helpers.analysis.report.BuCharge`) carry float sums from
the database. Everything finance reads — the text table, the CSV and the workbook — goes
through here, so the three show the same cents:

* :func:`priced_cost` — a group's cost as an exact :class:`~decimal.Decimal`, or None when
  no call of it is priced (*unpriced*: shown as the word, never as 0);
* :func:`round_by_currency` — amounts rounded to their currency's minor unit with
  :func:`aoai_helpers.core.money.round_parts`, one currency at a time, so that the rounded
  parts of each currency add up to that currency's exact total, rounded, to the last cent;
  amounts in ``MIXED`` (a group priced in several currencies) are not a sum finance can use
  and come back as None;
* :func:`ledger` — the statement's lines rounded that way (cost, and its exact and
  provisional parts) with one :class:`CurrencyTotal` per currency: currencies are totalled
  separately and never added together.

A float sum from the database is read at nine decimal places first (:func:`to_exact`: the
float noise of ``SUM(Cost)`` goes, ``0.0145`` is ``0.0145`` again). Rounding is half-up on the
exact sum, then largest remainder over the lines (ISO 4217 minor
units, :mod:`aoai_helpers.core.money`). A line's exact and provisional parts are its rounded
cost split in proportion to the exact parts (:func:`~aoai_helpers.core.money.split_exact`),
so the two always add up to the line's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from aoai_helpers.analysis.report import MIXED, BuCharge
from aoai_helpers.core.money import round_money, round_parts, split_exact, to_decimal

__all__ = [
    "NANO",
    "CurrencyTotal",
    "Ledger",
    "LineMoney",
    "ledger",
    "priced_cost",
    "round_by_currency",
    "to_exact",
]

#: The precision a float sum of costs is read at before it is rounded to the minor unit.
NANO: Final = Decimal("1e-9")


def to_exact(value: Decimal | float | None) -> Decimal | None:
    """A cost sum as an exact decimal at :data:`NANO` precision: the database sums per-call
    costs as floats, so ``0.0045 + 0.01`` comes back as ``0.014499999999999999``; read at nine
    places it is ``0.014500000`` again, and a half cent rounds up as it should. None stays
    None (unpriced)."""
    d = to_decimal(value)
    return None if d is None else d.quantize(NANO, rounding=ROUND_HALF_EVEN)


def priced_cost(
    cost: float | Decimal | None, calls: int, unpriced_calls: int, currency: str | None = ""
) -> Decimal | None:
    """The exact cost of a group of ``calls``; None when none of them is priced at a rate
    (``cost`` None; every call unpriced — a :class:`BuCharge` stores 0.0 then; or unpriced
    calls beside only unbilled ones: cost 0 and ``currency`` None)."""
    if cost is None or (calls > 0 and unpriced_calls >= calls):
        return None
    if unpriced_calls and currency is None and not cost:
        return None
    return to_exact(cost)


def round_by_currency(
    amounts: Sequence[Decimal | float | None], currencies: Sequence[str | None]
) -> list[Decimal | None]:
    """Each amount rounded to its currency's minor unit, the parts of each currency adding up
    to its rounded exact total; None (unpriced) and ``MIXED`` amounts come back as None.

    Negative amounts (none in a chargeback) are rounded one by one."""
    out: list[Decimal | None] = [None] * len(amounts)
    groups: dict[str | None, list[int]] = {}
    for i, (amount, currency) in enumerate(zip(amounts, currencies, strict=True)):
        if amount is not None and currency != MIXED:
            groups.setdefault(currency, []).append(i)
    for currency, index in groups.items():
        values = [to_exact(amounts[i]) for i in index]
        if any(v is not None and v < 0 for v in values):
            rounded: list[Decimal | None] = [
                None if v is None else round_money(v, currency) for v in values
            ]
        else:
            rounded = round_parts(values, currency)
        for i, value in zip(index, rounded, strict=True):
            out[i] = value
    return out


@dataclass(frozen=True, slots=True)
class LineMoney:
    """One statement line's money, rounded (None: unpriced, or ``MIXED`` — not totalled)."""

    cost: Decimal | None
    exact: Decimal | None  # the part from reported (exact) usage
    provisional: Decimal | None  # the part from usage we estimated (ESTIMATED_SOURCES)
    currency: str | None

    @property
    def unpriced(self) -> bool:
        """True when no call of the line is priced (and it is not a ``MIXED`` line)."""
        return self.cost is None and self.currency != MIXED


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """The lines of one currency, added up (money rounded: the sum of the shown parts)."""

    currency: str | None
    cost: Decimal
    exact: Decimal
    provisional: Decimal
    exact_cost: Decimal  # the unrounded sum (for shares)
    exact_provisional: Decimal
    lines: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    unpriced_calls: int
    estimated_calls: int

    @property
    def provisional_share(self) -> Decimal | None:
        """Share of the cost that is provisional (exact figures); None for no cost."""
        return self.exact_provisional / self.exact_cost if self.exact_cost else None


@dataclass(frozen=True, slots=True)
class Ledger:
    """The statement's lines rounded per currency (same order) and their totals."""

    lines: list[LineMoney]
    totals: list[CurrencyTotal]  # one per currency, in order of first appearance
    mixed: list[str]  # BUs priced in several currencies: shown, never totalled
    unpriced: list[str]  # BUs with no priced call
    unpriced_calls: int  # over every line

    def currencies(self) -> list[str]:
        """The currencies with a total (no ``None``)."""
        return [t.currency for t in self.totals if t.currency is not None]

    def single_currency(self) -> str | None:
        """The one currency of the statement, or None when there are several (or none)."""
        codes = self.currencies()
        return codes[0] if len(codes) == 1 and not self.mixed else None


def _split(
    cost: Decimal, exact: Decimal, provisional: Decimal, currency: str | None
) -> tuple[Decimal, Decimal]:
    """``cost`` (rounded) split into its exact and provisional parts, in their proportion."""
    weights = [max(exact, Decimal(0)), max(provisional, Decimal(0))]
    if not any(weights):
        return cost, cost - cost  # cost rounds from nothing: all of it exact (0)
    first, second = split_exact(cost, weights, currency)
    return first, second


def ledger(lines: Sequence[BuCharge]) -> Ledger:
    """The lines' money rounded per currency (see the module docstring), with totals."""
    exact_costs = [priced_cost(r.cost, r.calls, r.unpriced_calls, r.currency) for r in lines]
    currencies = [r.currency for r in lines]
    rounded = round_by_currency(exact_costs, currencies)
    money: list[LineMoney] = []
    for line, cost, exact_cost in zip(lines, rounded, exact_costs, strict=True):
        if cost is None or exact_cost is None:
            money.append(LineMoney(None, None, None, line.currency))
            continue
        provisional = to_exact(line.estimated_cost) or Decimal(0)
        exact, prov = _split(cost, exact_cost - provisional, provisional, line.currency)
        money.append(LineMoney(cost, exact, prov, line.currency))
    totals: dict[str | None, list[int]] = {}
    for i, m in enumerate(money):
        if m.cost is not None:
            totals.setdefault(m.currency, []).append(i)
    out = []
    for currency, index in totals.items():
        sub = [lines[i] for i in index]
        parts = [money[i] for i in index]
        exact_total = sum((exact_costs[i] or Decimal(0) for i in index), Decimal(0))
        cost_total = sum((p.cost or Decimal(0) for p in parts), Decimal(0))
        if currency is None and not exact_total:
            continue  # free calls only (throttled, failed): nothing to total, no currency
        out.append(
            CurrencyTotal(
                currency=currency,
                cost=cost_total,
                exact=sum((p.exact or Decimal(0) for p in parts), Decimal(0)),
                provisional=sum((p.provisional or Decimal(0) for p in parts), Decimal(0)),
                exact_cost=exact_total,
                exact_provisional=sum(
                    (to_exact(r.estimated_cost) or Decimal(0) for r in sub), Decimal(0)
                ),
                lines=len(sub),
                calls=sum(r.calls for r in sub),
                prompt_tokens=sum(r.prompt_tokens for r in sub),
                completion_tokens=sum(r.completion_tokens for r in sub),
                total_tokens=sum(r.total_tokens for r in sub),
                unpriced_calls=sum(r.unpriced_calls for r in sub),
                estimated_calls=sum(r.estimated_calls for r in sub),
            )
        )
    return Ledger(
        lines=money,
        totals=out,
        mixed=[r.business_unit for r in lines if r.currency == MIXED],
        unpriced=[r.business_unit for r, m in zip(lines, money, strict=True) if m.unpriced],
        unpriced_calls=sum(r.unpriced_calls for r in lines),
    )
