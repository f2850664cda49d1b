"""Money for finance outputs: exact decimals, each currency in its minor units. Pure.

Costs leave the database as floats (SQLite has no decimal type; Azure SQL and PostgreSQL
store ``DECIMAL``); :func:`to_decimal` turns one into the decimal it was written as (Python's
shortest round-trip ``repr``: a per-call cost rounded to nine places below a million has at most
15 significant digits, which a double keeps exactly). Every sum, share and split shown to
finance is then done here in :class:`~decimal.Decimal` arithmetic:

* :func:`minor_units` — the currency's decimals (ISO 4217: USD/EUR/CNY 2, JPY/KRW 0, BHD 3…);
* :func:`round_money` — an amount rounded half-up to those decimals;
* :func:`split_exact` — a total split by weights into parts that add up to it exactly in the
  minor unit (largest remainder; ties: the larger weight, then the earlier item);
* :func:`round_parts` — amounts each rounded to the minor unit so that the rounded parts add
  up to the rounded exact total (a statement's per-BU lines and its total, to the cent);
* :func:`format_money` — ``"1,234.56 USD"``; an unpriced amount (None) is the word
  ``"unpriced"``, never 0;
* :func:`xlsx_money_format` — the matching Excel number format (``#,##0.00 "USD"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

__all__ = [
    "UNPRICED",
    "format_money",
    "minor_units",
    "round_money",
    "round_parts",
    "split_exact",
    "sum_money",
    "to_decimal",
    "xlsx_money_format",
]

#: What an amount that has no rate is shown as (never 0).
UNPRICED: Final = "unpriced"

# ISO 4217 currencies whose minor unit is not 2 (the default). Source: ISO 4217 list one
# (SIX Financial Information, "Current currency & funds code list"), column "Minor unit".
_MINOR_UNITS: Final[dict[str, int]] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
         "VND", "VUV", "XAF", "XOF", "XPF"),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip


def minor_units(currency: str | None) -> int:
    """Decimal places of ``currency``'s minor unit (2 when unknown or missing)."""
    return _MINOR_UNITS.get((currency or "").upper(), 2)


def to_decimal(value: Decimal | float | int | str | None) -> Decimal | None:
    """``value`` as the decimal it was written as (a float through its shortest repr); None
    stays None (unpriced)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def round_money(value: Decimal | float | int | str, currency: str | None) -> Decimal:
    """``value`` rounded half-up to ``currency``'s minor unit."""
    amount = to_decimal(value)
    assert amount is not None
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def sum_money(values: Iterable[Decimal | float | int | str | None]) -> Decimal | None:
    """The exact sum of the priced values; None when every value is None (all unpriced)."""
    total: Decimal | None = None
    for v in values:
        d = to_decimal(v)
        if d is not None:
            total = d if total is None else total + d
    return total


def split_exact(
    total: Decimal | float | int | str, weights: Sequence[int | Decimal], currency: str | None
) -> list[Decimal]:
    """``total`` (rounded to the minor unit) split in proportion to ``weights``; the parts add up
    to it exactly. ValueError for a negative total or weight (a refund: split its amount and
    negate the parts), or a non-zero total and no weight."""
    places = minor_units(currency)
    units = int(round_money(total, currency).scaleb(places))
    if units < 0:
        raise ValueError("negative total")
    ws = [Decimal(w) for w in weights]
    if any(w < 0 for w in ws):
        raise ValueError("negative weight")
    whole = sum(ws, Decimal(0))
    if whole == 0:
        if units:
            raise ValueError("nothing to split by")
        return [Decimal(0).scaleb(-places) for _ in ws]
    exact = [units * w / whole for w in ws]
    parts = [int(e) for e in exact]  # floor (all non-negative)
    order = sorted(range(len(ws)), key=lambda i: (-(exact[i] - parts[i]), -ws[i], i))
    for i in order[: units - sum(parts)]:
        parts[i] += 1
    return [Decimal(p).scaleb(-places) for p in parts]


def round_parts(
    values: Sequence[Decimal | float | int | str | None], currency: str | None
) -> list[Decimal | None]:
    """Each priced value rounded to the minor unit so that the parts add up exactly to the
    exact total rounded: each part is its value's floor or ceiling, the ceilings going to the
    largest remainders (ties: the larger value, then the earlier); None (unpriced) stays None.

    Non-negative values only (costs): ValueError otherwise."""
    exact = [to_decimal(v) for v in values]
    priced = [d for d in exact if d is not None]
    if any(d < 0 for d in priced):
        raise ValueError("negative amount")
    places = minor_units(currency)
    scaled = [d.scaleb(places) for d in priced]
    parts = [int(d) for d in scaled]  # floor: each part is its value's floor or ceiling
    target = int(round_money(sum(priced, Decimal(0)), currency).scaleb(places))
    order = sorted(range(len(scaled)), key=lambda i: (-(scaled[i] - parts[i]), -scaled[i], i))
    for i in order[: target - sum(parts)]:
        parts[i] += 1
    rounded = iter(Decimal(p).scaleb(-places) for p in parts)
    return [None if d is None else next(rounded) for d in exact]


def format_money(
    value: Decimal | float | int | str | None, currency: str | None, *, code: bool = True
) -> str:
    """``"1,234.56 USD"`` (grouped, rounded to the minor unit); None → ``"unpriced"``."""
    if value is None:
        return UNPRICED
    amount = round_money(value, currency)
    text = f"{amount:,.{minor_units(currency)}f}"
    return f"{text} {currency}" if code and currency else text


def xlsx_money_format(currency: str | None) -> str:
    """An Excel number format showing ``currency`` in its minor units with its code."""
    places = minor_units(currency)
    body = "#,##0" + ("." + "0" * places if places else "")
    code = (currency or "").replace('"', "")
    return f'{body} "{code}";-{body} "{code}"' if code else body
