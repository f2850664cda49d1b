"""argparse value types shared by the CLI modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime

__all__ = ["date", "mapping", "money", "whole"]


def whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def date(text: str) -> datetime:
    """An argparse type: an ISO date (``YYYY-MM-DD``) or time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def mapping(text: str) -> tuple[str, str]:
    """An argparse type: ``DEPLOYMENT=MODEL``."""
    name, sep, model = text.partition("=")
    if not sep or not name.strip() or not model.strip():
        raise argparse.ArgumentTypeError(f"expected DEPLOYMENT=MODEL, not {text!r}")
    return name.strip(), model.strip()


def money(text: str) -> float:
    """An argparse type: a non-negative number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
