"""The one business clock: what time the toolkit takes it to be.

Every decision that depends on *today* reads this module and nothing else: the default report
month (the latest month with calls up to now), month-to-date budget burn and its projection,
the months ``local generate`` may fill (only complete ones), the timestamps the local gateway
and the local event log stamp on calls, when a statement was issued, and the grace windows
that decide when a month's numbers stop being provisional.

``AOAI_NOW`` sets it, to reproduce a run at another time (a month-end close, a report on the
1st)::

    AOAI_NOW=2027-03-01T00:05:00Z python -m aoai_helpers report

The value is an ISO 8601 time (``Z`` or an offset; no offset means UTC; a bare date means its
midnight UTC). While it is set the clock **stands still** at that instant: every read, in this
process and in every child process that inherits the variable, returns the same time, so a
whole run (gateway, consumer, notebook kernels) agrees on it. Unset, the clock is the system's.

Not on this clock, on purpose: durations and timeouts (``time.monotonic``); times other
systems compare with theirs (Event Hubs partition leases, access-token expiry); and
``IngestedAtUTC``, the physical time a writer stored a row, which also tells its rows from a
concurrent writer's (:func:`system_utcnow`: a standing clock would give every writer the same
stamp). Those read the system clock, and ``tests/test_clock.py`` holds the package to that
list.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

from aoai_helpers.exceptions import ConfigError

__all__ = [
    "ENV_VAR",
    "current_month",
    "is_complete",
    "month_bounds",
    "month_of",
    "now",
    "parse_instant",
    "previous_month",
    "system_now",
    "system_utcnow",
    "utcnow",
]

#: The environment variable that sets the clock.
ENV_VAR: Final = "AOAI_NOW"

_parsed: tuple[str, datetime] | None = None


def parse_instant(text: str) -> datetime:
    """An aware UTC datetime from ``2027-03-01T00:05:00Z`` (or an offset, or a bare date).

    Raises :class:`ConfigError` naming :data:`ENV_VAR` for anything else.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ConfigError(
            f"{ENV_VAR} must be an ISO 8601 time such as 2027-03-01T00:05:00Z, not {text!r}"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def system_now() -> datetime:
    """The machine's clock (aware UTC), whatever :data:`ENV_VAR` says.

    For times that APIM and Azure stamp themselves (real gateway logs), never for decisions.
    """
    return datetime.now(UTC)


def system_utcnow() -> datetime:
    """:func:`system_now` as naive UTC: when this process writes a row (``IngestedAtUTC``)."""
    return system_now().replace(tzinfo=None)


def now() -> datetime:
    """The business clock (aware UTC): :data:`ENV_VAR` while it is set, else the system clock."""
    global _parsed
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return system_now()
    if _parsed is None or _parsed[0] != raw:
        _parsed = (raw, parse_instant(raw))
    return _parsed[1]


def utcnow() -> datetime:
    """:func:`now` as naive UTC (every time the database stores is naive UTC)."""
    return now().replace(tzinfo=None)


def month_of(when: datetime | date) -> str:
    """``YYYY-MM`` of ``when`` (an aware time is taken in UTC)."""
    if isinstance(when, datetime) and when.tzinfo is not None:
        when = when.astimezone(UTC)
    return f"{when.year:04d}-{when.month:02d}"


def current_month() -> str:
    """The month the clock is in, ``YYYY-MM``."""
    return month_of(now())


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → (2026-11-01, 2026-12-01), naive UTC, the end exclusive.

    Raises :class:`ConfigError` on anything but ``YYYY-MM``.
    """
    m = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ConfigError(f"month must look like 2026-11, not {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    return datetime(year, mon, 1), datetime(year + (mon == 12), mon % 12 + 1, 1)


def previous_month(month: str | None = None) -> str:
    """The month before ``month`` (default: before the clock's): the latest complete month."""
    start, _ = month_bounds(month or current_month())
    return month_of(start - timedelta(days=1))


def is_complete(month: str) -> bool:
    """Whether ``month`` has ended by the clock (its last instant is in the past)."""
    _, end = month_bounds(month)
    return utcnow() >= end
