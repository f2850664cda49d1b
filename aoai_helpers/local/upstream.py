"""How the local gateway calls its backends: :class:`Upstreams` picks, per backend URL, the
gateway's own HTTP/1.1 client (:mod:`.http1`) for plain ``http://`` backends reached without a
proxy — the simulator, in local mode — and httpx for everything else (``https://``, a proxy
from the environment, or a ``transport`` given, as the tests give one). Both answer with an
:class:`UpstreamResponse` and fail with an :class:`UpstreamError` carrying the status the
policy's on-error answers. Imports :mod:`.http1`.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Final, Protocol
from urllib.parse import SplitResult, urlsplit

import httpx

from aoai_helpers.local.http1 import AVAILABLE, Http1Pool, UpstreamError

__all__ = ["UpstreamError", "UpstreamResponse", "Upstreams", "failure_status"]


class UpstreamResponse(Protocol):
    """A backend response whose head has arrived."""

    status_code: int
    headers: list[tuple[bytes, bytes]]  # names in lower case, values as sent
    content_type: str

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


def failure_status(exc: httpx.HTTPError) -> int:
    """The status of a backend call that failed, as the policy's on-error sets it: 504 when
    the backend did not answer in time (APIM's ``Timeout``), 500 for anything else (a
    connection not established or dropped: ``BackendConnectionFailure``)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return 504
    return 500


class _HttpxResponse:
    """An httpx response as an :class:`UpstreamResponse`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.multi_items()
        ]
        self.content_type = response.headers.get("content-type", "")

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(failure_status(exc), str(exc)) from exc

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise UpstreamError(failure_status(exc), str(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


#: A base URL path sent as it is (httpx sends the same bytes for it).
_SAFE_PATH: Final = re.compile(r"[A-Za-z0-9._~/-]*")


def _plain(url: str) -> SplitResult | None:
    """``url`` split, when the gateway's own client can call it: ``http://``, a host, no user,
    query or fragment, ASCII, and no proxy for it in the environment (else httpx does)."""
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return None
    if (
        not url.isascii()
        or split.scheme != "http"
        or not split.hostname
        or split.username is not None
    ):
        return None
    if split.query or split.fragment or port == 0 or not _SAFE_PATH.fullmatch(split.path):
        return None  # httpx would re-encode it: httpx calls it
    proxies = urllib.request.getproxies()
    if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(split.netloc):
        return None
    return split


class Upstreams:
    """The gateway's backend client (see the module docstring)."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None, timeout: float, connect_timeout: float
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(timeout, connect=connect_timeout)
        )
        own = transport is None and AVAILABLE
        self._own = Http1Pool(timeout, connect_timeout) if own else None
        self._bases: dict[str, SplitResult | None] = {}

    async def send(
        self, base: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        """POST ``body`` to ``base + target`` (``target``: the path and query) with ``headers``;
        the response once its head arrived. Raises :class:`UpstreamError`."""
        if self._own is not None:
            if base not in self._bases:
                self._bases[base] = _plain(base)
            split = self._bases[base]
            if split is not None:
                return await self._own.send(split, split.path + target, headers, body)
        request = self._client.build_request("POST", base + target, headers=headers, content=body)
        try:
            return _HttpxResponse(await self._client.send(request, stream=True))
        except httpx.HTTPError as exc:
            raise UpstreamError(failure_status(exc), str(exc)) from exc

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()
        await self._client.aclose()
