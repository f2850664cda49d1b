"""Amounts a user types (``--allocate 12,000.50``, a monthly budget): parsed to a Decimal,
refused in one line when they are not a non-negative amount with at most two places. Pure; no
imports of the package but its exceptions (the CLI checks an amount before it opens a database).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from aoai_helpers.exceptions import ConfigError

__all__ = ["parse_amount"]


def parse_amount(value: Decimal | float | int | str, decimals: int = 2) -> Decimal:
    """A non-negative amount with at most ``decimals`` places (``"12,000.50"`` ok), as a
    Decimal; :class:`ConfigError` otherwise."""
    try:
        amount = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise ConfigError(f"not an amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigError(f"the amount must be a non-negative number, not {value!r}")
    step = Decimal(1).scaleb(-decimals)
    if amount != amount.quantize(step, rounding=ROUND_HALF_EVEN):
        raise ConfigError(f"the amount {value} has more than {decimals} decimal places")
    return amount
