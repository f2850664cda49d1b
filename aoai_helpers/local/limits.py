"""Per-BU token limits in local mode, as APIM's ``llm-token-limit`` applies them.

The product policy (``policies/product-policy.xml``) gives each subscription with a
``token_limit`` one ``llm-token-limit`` with ``estimate-prompt-tokens="false"``: the tokens a
call consumed are counted from its usage once the response is known, and a call is refused
while the counter is over the limit — 429 for ``tokens-per-minute``, 403 for ``token-quota``
over its ``token-quota-period`` (the policy reference, *Limit large language model API token
usage*). A call that starts under the limit goes through even if it then goes over; the next
calls are refused until the window frees up.

What the emulation decides where the reference is silent (stated, not confirmed): the minute
is a sliding 60-second window; quota periods are calendar periods in UTC on the business clock
(:mod:`aoai_helpers.clock`: the hour, the day, the ISO week from Monday, the month, the year);
the refusal bodies are APIM-shaped (``{"statusCode", "message"}``) with ``Retry-After`` in
seconds. Responses carry the remaining counts in the headers the product policy names.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from aoai_helpers import clock
from aoai_helpers.spec import Subscription, TokenLimit

__all__ = [
    "REMAINING_QUOTA_HEADER",
    "REMAINING_TOKENS_HEADER",
    "Limited",
    "TokenLimiter",
    "period_start",
]

#: The headers the product policy's ``llm-token-limit`` names.
REMAINING_TOKENS_HEADER: Final = "x-apim-remaining-tokens"
REMAINING_QUOTA_HEADER: Final = "x-apim-remaining-quota-tokens"
_WINDOW: Final = 60.0


@dataclass(frozen=True, slots=True)
class Limited:
    """A refusal: the status (429 or 403), the message and the seconds to wait."""

    status: int
    message: str
    retry_after: int


def period_start(period: str, when: datetime) -> datetime:
    """The start of the calendar ``period`` (``Hourly`` … ``Yearly``) holding ``when`` (naive UTC)."""
    if period == "Hourly":
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "Daily":
        return day
    if period == "Weekly":
        return day - timedelta(days=day.weekday())
    if period == "Monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)  # Yearly


def _period_end(period: str, start: datetime) -> datetime:
    if period == "Hourly":
        return start + timedelta(hours=1)
    if period == "Daily":
        return start + timedelta(days=1)
    if period == "Weekly":
        return start + timedelta(days=7)
    if period == "Monthly":
        return start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


class _Counter:
    def __init__(self, limit: TokenLimit) -> None:
        self.limit = limit
        self.minute: deque[tuple[float, int]] = deque()
        self.period: datetime | None = None
        self.quota_used = 0

    def _expire(self, now: float) -> int:
        while self.minute and self.minute[0][0] <= now - _WINDOW:
            self.minute.popleft()
        return sum(n for _, n in self.minute)

    def _roll(self, when: datetime) -> None:
        if self.limit.token_quota_period is None:
            return
        start = period_start(self.limit.token_quota_period, when)
        if self.period != start:
            self.period, self.quota_used = start, 0


class TokenLimiter:
    """The per-subscription counters of the spec's token limits (thread-safe).

    ``monotonic`` times the minute window; the quota period follows the business clock.
    """

    def __init__(
        self,
        subscriptions: Mapping[str, Subscription],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = {
            sid: _Counter(sub.token_limit)
            for sid, sub in subscriptions.items()
            if sub.token_limit is not None
        }
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def check(self, subscription: str) -> tuple[Limited | None, dict[str, str]]:
        """Before a call: a refusal, or None; and the remaining-count headers for the response."""
        counter = self._counters.get(subscription)
        if counter is None:
            return None, {}
        with self._lock:
            now = self._monotonic()
            used = counter._expire(now)
            counter._roll(clock.utcnow())
            limit = counter.limit
            headers: dict[str, str] = {}
            if limit.tokens_per_minute is not None:
                headers[REMAINING_TOKENS_HEADER] = str(max(0, limit.tokens_per_minute - used))
                if used >= limit.tokens_per_minute:
                    wait = math.ceil(counter.minute[0][0] + _WINDOW - now) if counter.minute else 1
                    return Limited(
                        429,
                        f"Token limit is exceeded. Try again in {max(1, wait)} seconds.",
                        max(1, wait),
                    ), headers
            if limit.token_quota is not None and limit.token_quota_period is not None:
                headers[REMAINING_QUOTA_HEADER] = str(
                    max(0, limit.token_quota - counter.quota_used)
                )
                if counter.quota_used >= limit.token_quota:
                    assert counter.period is not None
                    end = _period_end(limit.token_quota_period, counter.period)
                    wait = max(1, math.ceil((end - clock.utcnow()).total_seconds()))
                    return Limited(
                        403,
                        f"Token quota is exceeded. Try again in {wait} seconds.",
                        wait,
                    ), headers
            return None, headers

    def consume(self, subscription: str, tokens: int) -> None:
        """After a call: count the tokens it consumed."""
        counter = self._counters.get(subscription)
        if counter is None or tokens <= 0:
            return
        with self._lock:
            counter.minute.append((self._monotonic(), tokens))
            counter._roll(clock.utcnow())
            counter.quota_used += tokens
