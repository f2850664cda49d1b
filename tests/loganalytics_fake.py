"""An in-memory Log Analytics query API: an azure-core transport that plays it from a list of rows.

What it checks and answers is what the docs say (MicrosoftDocs/azure-monitor-docs,
``articles/azure-monitor/logs/api/``), nothing more:

- *request-format* (https://learn.microsoft.com/azure/azure-monitor/logs/api/request-format):
  ``POST {endpoint}/v1/workspaces/{workspaceId}/query``; "The request body must be valid JSON.
  Include the ``Content-Type: application/json`` header"; body ``query`` (required),
  ``timespan`` (ISO 8601: a duration or a ``start/end`` pair), ``workspaces``.
- *access-api* (…/access-api): a bearer token for the Log Analytics API
  (``resource=https://api.loganalytics.io``; per cloud from :mod:`aoai_helpers.clouds`).
- *response-format* (…/response-format): ``{"tables": [{"name": "PrimaryResult", "columns":
  [{"name", "type"}], "rows": [[…]]}]}``; a fatal error is an error status with a OneAPI
  error object; a non-fatal one is ``200`` with the tables *and* an ``error`` whose code is
  ``PartialError`` (details in ``details``).
- *timeouts* (…/timeouts): ``Prefer: wait=N``; ``204 No Content`` for a workspace without data.

The rows answered are those of :attr:`LogAnalyticsFake.rows` whose ``TimeGenerated`` falls in
the request's ``timespan`` (``start <= t < end``) — the KQL text is recorded, never interpreted.
Column types are those of the table reference (*ApiManagementGatewayLlmLog*).

Every request is recorded (:class:`SeenRequest`: method, URL, headers with the
``Authorization`` value replaced by its scheme, the JSON body); the scopes a token was asked
for are recorded by :class:`FakeCredential`, separately. A request that does not have the
documented shape is added to :attr:`LogAnalyticsFake.problems` and fails the test
(``AssertionError`` out of ``send``). :meth:`LogAnalyticsFake.fail_next` makes the next
requests fail: ``throttle`` (429 with ``Retry-After``), ``server`` (500), ``partial`` (200 +
``PartialError``), ``forbidden`` (403), ``unauthorized`` (401), ``bad_request`` (400),
``connection`` (no answer), ``empty`` (204). (The error codes in the bodies are illustrative:
the fake only promises the documented OneAPI shape, ``{"error": {"code", "message"}}``.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ServiceRequestError
from azure.core.rest._http_response_impl import HttpResponseImpl

from aoai_helpers.azure.dryrun import MemoryTransport, RecordedRequest, memory_response

#: ApiManagementGatewayLlmLog columns and their documented types (table reference).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("TimeGenerated", "datetime"),
    ("CorrelationId", "string"),
    ("RequestId", "string"),
    ("SequenceNumber", "int"),
    ("OperationName", "string"),
    ("DeploymentName", "string"),
    ("ModelName", "string"),
    ("ApiVersion", "string"),
    ("IsStreamCompletion", "bool"),
    ("PromptTokens", "int"),
    ("CompletionTokens", "int"),
    ("TotalTokens", "int"),
    ("Region", "string"),
)
FAILURES = (
    "throttle",
    "server",
    "partial",
    "forbidden",
    "unauthorized",
    "bad_request",
    "connection",
    "empty",
)
_BODY_KEYS = {"query", "timespan", "workspaces"}


class FakeCredential:
    """A token credential that records the scopes it is asked for (never signs in)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.token = "fake-log-analytics-token-7f3a9c"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


def parse_timespan(value: str) -> tuple[datetime, datetime]:
    """An ISO 8601 ``start/end`` interval (the form the client sends) as aware datetimes."""
    start, _, end = value.partition("/")
    if not end:
        raise ValueError(f"not a start/end interval: {value!r}")
    return _instant(start), _instant(end)


def _instant(text: str) -> datetime:
    found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if found.tzinfo is None:
        raise ValueError(f"no time zone in {text!r}")
    return found.astimezone(UTC)


@dataclass(frozen=True)
class SeenRequest(RecordedRequest):
    """One query request as the SDK sent it (headers without the token itself)."""

    @property
    def timespan(self) -> tuple[datetime, datetime]:
        """The request body's ``timespan`` as (start, end), aware UTC."""
        body = self.body if isinstance(self.body, dict) else {}
        return parse_timespan(body.get("timespan") or "")


def _row_time(row: Mapping[str, Any]) -> datetime:
    value = row["TimeGenerated"]
    when = value if isinstance(value, datetime) else _instant(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        when = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return value


@dataclass
class LogAnalyticsFake(MemoryTransport):
    """Plays ``POST {endpoint}/v1/workspaces/{workspace_id}/query`` from :attr:`rows`."""

    endpoint: str
    workspace_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    retry_after: str = "2"
    _failures: list[str] = field(default_factory=list)

    def fail_next(self, count: int, kind: str) -> None:
        """The next ``count`` requests fail as ``kind`` (one of :data:`FAILURES`)."""
        assert kind in FAILURES, kind
        self._failures.extend([kind] * count)

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows.extend(dict(r) for r in rows)

    # --- HttpTransport ------------------------------------------------------------------------

    def send(self, request: Any, **kwargs: Any) -> HttpResponseImpl:
        raw = self.body_text(request)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {
            k: (v.split(" ", 1)[0] + " <redacted>" if k.lower() == "authorization" else v)
            for k, v in request.headers.items()
        }
        seen = SeenRequest(request.method, request.url, body, headers)
        self.requests.append(seen)
        problems = self._check(seen, request.headers)
        if problems:
            self.problems.extend(problems)
            raise AssertionError("request not in the documented shape: " + "; ".join(problems))
        if self._failures:
            return self._fail(request, self._failures.pop(0), seen)
        return _response(request, 200, self._answer(seen))

    # --- the documented request shape ---------------------------------------------------------

    def _check(self, seen: SeenRequest, raw_headers: Mapping[str, str]) -> list[str]:
        out = []
        want = urlsplit(self.endpoint)
        url = urlsplit(seen.url)
        if seen.method != "POST":
            out.append(f"method {seen.method}, not POST")
        if (url.scheme, url.netloc) != (want.scheme, want.netloc):
            out.append(f"host {url.scheme}://{url.netloc}, not {self.endpoint}")
        if url.path != f"/v1/workspaces/{self.workspace_id}/query":
            out.append(f"path {url.path}, not /v1/workspaces/{self.workspace_id}/query")
        content_type = seen.header("Content-Type") or ""
        if content_type.split(";")[0].strip().lower() != "application/json":
            out.append(f"Content-Type {content_type!r}, not application/json")
        auth = next((v for k, v in raw_headers.items() if k.lower() == "authorization"), "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            out.append("no bearer token")
        prefer = seen.header("Prefer")
        # azure-monitor-query 2.0 sends an empty Prefer when no preference is asked for
        if prefer and not all(
            p.strip().startswith(("wait=", "include-statistics=", "include-render="))
            for p in prefer.split(",")
        ):
            out.append(f"Prefer {prefer!r} is not a documented preference")
        body = seen.body
        if not isinstance(body, dict):
            return [*out, "the body is not a JSON object"]
        if not isinstance(body.get("query"), str) or not body["query"].strip():
            out.append("no query in the body")
        if set(body) - _BODY_KEYS:
            out.append(f"unknown body properties {sorted(set(body) - _BODY_KEYS)}")
        try:
            start, end = parse_timespan(body.get("timespan") or "")
            if not start < end:
                out.append(f"timespan {body['timespan']!r} is empty or reversed")
        except ValueError as exc:
            out.append(f"timespan: {exc}")
        return out

    # --- answers ------------------------------------------------------------------------------

    def _table(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": "PrimaryResult",
            "columns": [{"name": n, "type": t} for n, t in TABLE_COLUMNS],
            "rows": [[_wire(r.get(n)) for n, _t in TABLE_COLUMNS] for r in rows],
        }

    def _in_window(self, seen: SeenRequest) -> list[dict[str, Any]]:
        start, end = seen.timespan
        return [r for r in self.rows if start <= _row_time(r) < end]

    def _answer(self, seen: SeenRequest) -> dict[str, Any]:
        return {"tables": [self._table(self._in_window(seen))]}

    def _fail(self, request: Any, kind: str, seen: SeenRequest) -> HttpResponseImpl:
        if kind == "connection":
            raise ServiceRequestError("connection refused (fake)")
        if kind == "empty":
            return _response(request, 204, None)
        if kind == "partial":
            rows = self._in_window(seen)
            return _response(
                request,
                200,
                {
                    "tables": [self._table(rows[: len(rows) // 2])],
                    "error": {
                        "code": "PartialError",
                        "message": "There were some errors when processing your query.",
                        "details": [{"code": "EngineError", "message": "a shard did not answer"}],
                    },
                },
            )
        status, code = {
            "throttle": (429, "ThrottledError"),
            "server": (500, "InternalServerError"),
            "forbidden": (403, "InsufficientAccessError"),
            "unauthorized": (401, "AuthorizationRequiredError"),
            "bad_request": (400, "BadArgumentError"),
        }[kind]
        extra = {"Retry-After": self.retry_after} if status == 429 else {}
        return _response(
            request, status, {"error": {"code": code, "message": f"{code} (fake)"}}, extra
        )


def _response(
    request: Any, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> HttpResponseImpl:
    return memory_response(request, status, payload, headers, service_headers={})


def llm_row(
    correlation_id: str,
    when: datetime | str,
    *,
    prompt: int | None = None,
    completion: int | None = None,
    total: int | None = None,
    sequence: int = 0,
    model: str | None = "gpt-4o-2024-11-20",
    deployment: str | None = "gpt-4o",
    stream: bool | None = True,
) -> dict[str, Any]:
    """One ``ApiManagementGatewayLlmLog`` row (the table's column names)."""
    return {
        "TimeGenerated": when,
        "CorrelationId": correlation_id,
        "RequestId": f"chatcmpl-{correlation_id[:8]}",
        "SequenceNumber": sequence,
        "OperationName": "Creates a completion for the chat message",
        "DeploymentName": deployment,
        "ModelName": model,
        "ApiVersion": "2024-10-21",
        "IsStreamCompletion": stream,
        "PromptTokens": prompt,
        "CompletionTokens": completion,
        "TotalTokens": total,
        "Region": "West Europe",
    }
