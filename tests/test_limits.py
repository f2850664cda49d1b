"""Local token limits (aoai_helpers.local.limits), as APIM's llm-token-limit applies them."""

from __future__ import annotations

from datetime import datetime

import pytest

from aoai_helpers.local.limits import (
    REMAINING_QUOTA_HEADER,
    REMAINING_TOKENS_HEADER,
    TokenLimiter,
    period_start,
)
from aoai_helpers.spec import Subscription, TokenLimit


def _limiter(limit: TokenLimit, now: list[float]) -> TokenLimiter:
    sub = Subscription(id="bu-a", display_name="A", business_unit="A", token_limit=limit)
    return TokenLimiter(
        {"bu-a": sub, "bu-free": Subscription(id="bu-free", display_name="F", business_unit="F")},
        monotonic=lambda: now[0],
    )


def test_a_call_under_the_minute_limit_goes_through_and_the_next_waits_for_the_window() -> None:
    now = [1000.0]
    lim = _limiter(TokenLimit(tokens_per_minute=100), now)
    assert lim.check("bu-a") == (None, {REMAINING_TOKENS_HEADER: "100"})
    lim.consume("bu-a", 130)  # started under the limit: went through, now over
    refused, headers = lim.check("bu-a")
    assert refused is not None and refused.status == 429 and refused.retry_after == 60
    assert headers[REMAINING_TOKENS_HEADER] == "0"
    now[0] += 59.0
    assert lim.check("bu-a")[0] is not None and lim.check("bu-a")[0].retry_after == 1  # type: ignore[union-attr]
    now[0] += 1.0  # the window has moved past the call
    assert lim.check("bu-a") == (None, {REMAINING_TOKENS_HEADER: "100"})
    assert lim.check("bu-free") == (None, {})  # no limit, no headers


@pytest.mark.parametrize(
    ("period", "when", "start"),
    [
        ("Hourly", datetime(2027, 3, 1, 0, 5), datetime(2027, 3, 1, 0, 0)),
        ("Daily", datetime(2028, 2, 29, 23, 59), datetime(2028, 2, 29)),
        ("Weekly", datetime(2027, 1, 1, 12), datetime(2026, 12, 28)),  # a Monday, over the year end
        ("Monthly", datetime(2027, 3, 15, 12), datetime(2027, 3, 1)),
        ("Yearly", datetime(2027, 3, 15, 12), datetime(2027, 1, 1)),
    ],
)
def test_quota_periods_are_calendar_periods(period: str, when: datetime, start: datetime) -> None:
    assert period_start(period, when) == start


def test_the_quota_refuses_with_403_until_the_next_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOAI_NOW", "2027-03-31T23:59:00Z")
    lim = _limiter(TokenLimit(token_quota=50, token_quota_period="Monthly"), [0.0])
    lim.consume("bu-a", 60)
    refused, headers = lim.check("bu-a")
    assert refused is not None and refused.status == 403 and refused.retry_after == 60
    assert headers[REMAINING_QUOTA_HEADER] == "0"
    monkeypatch.setenv("AOAI_NOW", "2027-04-01T00:00:00Z")  # a new month: a new quota
    assert lim.check("bu-a") == (None, {REMAINING_QUOTA_HEADER: "50"})


def test_the_header_names_are_the_product_policys() -> None:
    from cli_run import ROOT

    from aoai_helpers.azure.apim.policy import render_product_policy
    from aoai_helpers.spec import load_spec

    rendered = render_product_policy(load_spec(ROOT / "examples" / "gateway.yaml"))
    assert f'remaining-tokens-header-name="{REMAINING_TOKENS_HEADER}"' in rendered
    assert f'remaining-quota-tokens-header-name="{REMAINING_QUOTA_HEADER}"' in rendered
