"""The local gateway's APIM subscription keys: which subscription a request's key belongs to,
as APIM decides it (the first credential present decides; looked up by digest, compared in
constant time). Imports the top level only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final

from aoai_helpers.spec import Subscription

__all__ = ["INVALID_KEY", "MISSING_KEY", "SubscriptionKeys"]

MISSING_KEY: Final = (
    b'{"statusCode": 401, "message": "Access denied due to missing subscription key. Make sure '
    b'to include subscription key when making requests to an API."}'
)
INVALID_KEY: Final = (
    b'{"statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure '
    b'to provide a valid key for an active subscription."}'
)
#: Headers naming the caller's credential; each may appear once.
_CREDENTIAL_HEADERS: Final = (b"api-key", b"ocp-apim-subscription-key")


class SubscriptionKeys:
    """Subscription id → key, looked up by the key's SHA-256 digest."""

    def __init__(self, keys: Mapping[str, str], by_id: Mapping[str, Subscription]) -> None:
        unknown = sorted(set(keys) - set(by_id))
        if unknown:
            raise ValueError(f"keys for unknown subscriptions: {', '.join(unknown)}")
        self._by_digest = {
            hashlib.sha256(key.encode()).digest(): (key, by_id[sid]) for sid, key in keys.items()
        }

    def identify(
        self,
        raw_headers: list[tuple[bytes, bytes]],
        headers: Mapping[str, str],
        query: Sequence[tuple[str, str]],
    ) -> Subscription | bytes:
        """The subscription the key belongs to, or the 401 body to answer with.

        The first credential *present* decides (``api-key``, then ``Ocp-Apim-Subscription-Key``,
        then query ``subscription-key``): an empty one is refused, never passed over. A
        credential header sent twice is refused (APIM joins repeated values with a comma)."""
        if "api-key" in headers:
            key: str | None = headers["api-key"]
        elif "ocp-apim-subscription-key" in headers:
            key = headers["ocp-apim-subscription-key"]
        else:
            key = next((v for k, v in query if k == "subscription-key"), None)
        if not key:  # none, or an empty one: refused, never passed over for another
            return MISSING_KEY
        found = self._by_digest.get(hashlib.sha256(key.encode()).digest())
        names = [k.lower() for k, _v in raw_headers]
        repeated = any(names.count(name) > 1 for name in _CREDENTIAL_HEADERS)
        if found is None or repeated or not hmac.compare_digest(found[0].encode(), key.encode()):
            return INVALID_KEY
        return found[1]
