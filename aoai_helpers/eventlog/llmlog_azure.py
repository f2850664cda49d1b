"""APIM's language-model log on Azure: read ``ApiManagementGatewayLlmLog`` from Log Analytics.

:class:`LogAnalyticsLlmLog` is the :class:`~aoai_helpers.eventlog.llmlog.LlmLogSource` reconciliation
reads on Azure. It queries the workspace with azure-monitor-query's ``LogsQueryClient``
(``query_workspace``: ``POST {endpoint}/v1/workspaces/{workspaceId}/query`` with a JSON body
``{"query": …, "timespan": "<start>/<end>"}`` — *Azure Monitor Log Analytics API request
format*, learn.microsoft.com/azure/azure-monitor/logs/api/request-format) and reads the
documented response (``{"tables": [{"name", "columns": [{"name", "type"}], "rows"}]}``,
*response-format*).

Per cloud, the endpoint and the token audience come from :mod:`aoai_helpers.clouds`
(``https://api.loganalytics.io`` / ``.azure.cn`` / ``.us``, scope ``<endpoint>/.default``; *Access
the Azure Monitor Log Analytics API*, access-api) and are passed explicitly (``endpoint=``,
``credential_scopes=``), never left to the SDK's public-cloud default.

The query has one fixed shape: the table, a ``TimeGenerated`` filter ``>= start`` and
``< end``, and a ``project`` of the columns of :data:`~aoai_helpers.eventlog.llmlog.COLUMNS` (the
configured correlation column, ``llm_log.correlation_column``, is projected *as*
``CorrelationId``). The same window also goes in the request's ``timespan``: the Basic table
plan ignores time filters in the query text ("Time filters in the KQL query don't replace this
explicit time range", *Query data in a Basic and Auxiliary table*), and the service intersects
the two. Long windows are read in slices of at most ``max_window`` (a first run reads up to 30
days), so no single answer approaches the query API's row limits.

Failures — nothing is returned unless every slice was read completely (a partial answer would
let the watermark move past records it never saw):

- throttling (``429``), server errors (``5xx``), connection errors and partial results (``200``
  with an ``error`` of code ``PartialError``, ``LogsQueryPartialResult``; *response-format*:
  "a non-fatal error … The response also contains an ``error`` property") are retried with
  exponential backoff (1 s, 2 s, 4 s … at most 60 s; a longer ``Retry-After``, up to 5 minutes, wins), through
  ``sleep``; after ``max_attempts`` attempts, :class:`~aoai_helpers.exceptions.ReconcileError`;
- ``401`` / ``403`` are not retried: one line saying the identity needs *Log Analytics Reader*
  (role ``73c42c96-874c-492b-b04d-ab87d138a893``) on the workspace;
- any other error status: :class:`~aoai_helpers.exceptions.ReconcileError` at once;
- ``204 No Content`` (a workspace without data, *timeouts*) is an empty answer.

The SDK's own retry policy is turned off (``retry_total=0``), so the attempts and their delays
are this module's, observable through ``sleep``. Messages name the workspace, the status and
the error code — never a token, a header or the query's rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aoai_helpers.clouds import Cloud, get_cloud
from aoai_helpers.eventlog.llmlog import COLUMNS, TABLE, LlmLogRecord, record_from_row
from aoai_helpers.exceptions import ConfigError, ReconcileError
from aoai_helpers.spec import Spec

__all__ = [
    "LOG_ANALYTICS_READER",
    "LogAnalyticsLlmLog",
    "llm_log_query",
]

#: Built-in role that may query the workspace (*Azure built-in roles for Monitor*).
LOG_ANALYTICS_READER: Final = "73c42c96-874c-492b-b04d-ab87d138a893"
_FIRST_DELAY: Final = 1.0
_MAX_DELAY: Final = 60.0
_MAX_RETRY_AFTER: Final = 300.0
_MAX_WINDOW: Final = timedelta(days=1)
_COLUMN: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _kql_time(when: datetime) -> str:
    return f"datetime({when.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z)"


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _naive(when: datetime) -> datetime:
    return when if when.tzinfo is None else when.astimezone(UTC).replace(tzinfo=None)


def llm_log_query(start: datetime, end: datetime, correlation_column: str = "CorrelationId") -> str:
    """The KQL of one window (naive UTC ``start`` / ``end``): fixed shape, no user text."""
    columns = [
        f"CorrelationId = {correlation_column}"
        if name == "CorrelationId" and correlation_column != "CorrelationId"
        else name
        for name in COLUMNS
    ]
    return (
        f"{TABLE}\n"
        f"| where TimeGenerated >= {_kql_time(start)} and TimeGenerated < {_kql_time(end)}\n"
        f"| project {', '.join(columns)}"
    )


def _rows(tables: Sequence[Any]) -> list[dict[str, Any]]:
    """Each row of the answer's first table as column name → value."""
    if not tables:
        return []
    table = tables[0]
    names = list(table.columns)
    return [dict(zip(names, list(row), strict=False)) for row in table.rows]


class LogAnalyticsLlmLog:
    """``ApiManagementGatewayLlmLog`` of one Log Analytics workspace (see the module docstring).

    ``workspace_id`` is the workspace's GUID (``llm_log.workspace_id``); ``cloud`` gives the
    endpoint and token scope; ``credential`` is any azure-identity token credential (on the
    function: its managed identity). ``transport`` (an azure-core ``HttpTransport``) is for
    tests; ``server_timeout`` (seconds) is sent as ``Prefer: wait=…``; ``max_window`` is the
    longest slice one query reads.
    """

    def __init__(
        self,
        workspace_id: str,
        cloud: Cloud,
        credential: Any,
        *,
        correlation_column: str = "CorrelationId",
        transport: Any = None,
        max_attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        server_timeout: int | None = None,
        max_window: timedelta = _MAX_WINDOW,
    ) -> None:
        try:
            from azure.monitor.query import LogsQueryClient
        except ImportError:
            raise ConfigError(
                "azure-monitor-query is not installed: pip install 'apim-aoai-proxy[azure]'"
            ) from None
        if not workspace_id.strip():
            raise ConfigError("no Log Analytics workspace id (llm_log.workspace_id)")
        if not _COLUMN.match(correlation_column):  # it goes into the query text
            raise ConfigError(f"correlation column {correlation_column!r} is not a column name")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if max_window <= timedelta(0):
            raise ConfigError("max_window must be positive")
        self.workspace_id = workspace_id.strip().lower()
        self.cloud = cloud
        self.correlation_column = correlation_column
        self.max_attempts = max_attempts
        self.server_timeout = server_timeout
        self.max_window = max_window
        self._sleep = sleep
        kwargs: dict[str, Any] = {
            "endpoint": cloud.log_analytics_endpoint,
            "credential_scopes": [cloud.log_analytics_scope],
            "retry_total": 0,  # the retries are ours (see the module docstring)
        }
        if transport is not None:
            kwargs["transport"] = transport
        self._client = LogsQueryClient(credential, **kwargs)

    @classmethod
    def from_spec(cls, spec: Spec, credential: Any, **kw: Any) -> LogAnalyticsLlmLog:
        """The source of ``spec.llm_log`` on ``spec.cloud`` (``kw`` as for the constructor)."""
        workspace = spec.llm_log.workspace_id
        if not workspace:
            raise ConfigError(
                "llm_log.workspace_id is not set: give the Log Analytics workspace's GUID "
                "(Workspace ID) to read APIM's language-model log"
            )
        kw.setdefault("correlation_column", spec.llm_log.correlation_column)
        return cls(workspace, get_cloud(spec.cloud), credential, **kw)

    @property
    def name(self) -> str:
        return f"log-analytics:{self.workspace_id}"

    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        """The records with ``start <= TimeGenerated < end`` (naive UTC), every part as it is."""
        start, end = _naive(start), _naive(end)
        out: list[LlmLogRecord] = []
        low = start
        while low < end:
            high = min(low + self.max_window, end)
            for row in self._query(low, high):
                record = record_from_row(row)
                if record is not None and low <= record.time_generated < high:
                    out.append(record)
            low = high
        return out

    # --- one slice, with retries -------------------------------------------------------------

    def _query(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.monitor.query import LogsQueryPartialResult

        query = llm_log_query(start, end, self.correlation_column)
        timespan = (_aware(start), _aware(end))
        last = ""
        answered: list[int] = []  # the status of each answer (the SDK hides a 204's)

        def seen(response: Any) -> None:
            answered.append(response.http_response.status_code)

        for attempt in range(1, self.max_attempts + 1):
            retry_after = 0.0
            answered.clear()
            try:
                result = self._client.query_workspace(
                    self.workspace_id,
                    query,
                    timespan=timespan,
                    server_timeout=self.server_timeout,
                    raw_response_hook=seen,
                )
            except (ServiceRequestError, ServiceResponseError) as exc:
                last = f"connection error {type(exc).__name__}"
            except ValueError:  # the SDK read a body that is not JSON (204's is empty)
                status = answered[-1] if answered else None
                if status == 204:
                    return []  # a workspace without data (*timeouts*: 204 No Content)
                refused = self._permanent(status, "") if status is None or status >= 400 else None
                if refused is not None:
                    raise refused from None
                last = f"unreadable answer, HTTP {status}"
            except (ClientAuthenticationError, HttpResponseError) as exc:
                status = exc.status_code
                if status == 204:
                    return []
                code = _error_code(exc)
                refused = self._permanent(status, code)
                if refused is not None:
                    raise refused from None
                last = f"HTTP {status}{' ' + code if code else ''}"
                retry_after = _retry_after(exc)
            else:
                if isinstance(result, LogsQueryPartialResult):
                    error = result.partial_error
                    last = f"partial result {getattr(error, 'code', None) or 'PartialError'}"
                else:
                    return _rows(result.tables)
            if attempt < self.max_attempts:
                self._backoff(attempt, retry_after)
        raise ReconcileError(
            f"Log Analytics query of workspace {self.workspace_id} still failing after "
            f"{self.max_attempts} attempts (last: {last}); nothing was changed"
        )

    def _backoff(self, attempt: int, retry_after: float) -> None:
        """Wait before the next attempt: doubling from the first delay (capped), or longer when
        the service said so (``Retry-After``, capped too)."""
        delay = min(_FIRST_DELAY * 2 ** (attempt - 1), _MAX_DELAY)
        self._sleep(max(delay, min(retry_after, _MAX_RETRY_AFTER)))

    def _permanent(self, status: int | None, code: str) -> ReconcileError | None:
        """The error for a status that retrying cannot fix (all but 429 and 5xx), else None."""
        what = f"HTTP {status}{' ' + code if code else ''}"
        if status in (401, 403):
            return ReconcileError(
                f"Log Analytics refused to query workspace {self.workspace_id} ({what}): the "
                f"identity needs 'Log Analytics Reader' (role {LOG_ANALYTICS_READER}) on the "
                "workspace; nothing was changed"
            )
        if status is None or not (status == 429 or status >= 500):
            return ReconcileError(
                f"Log Analytics query of workspace {self.workspace_id} failed ({what}); nothing "
                "was changed"
            )
        return None


def _error_code(exc: Any) -> str:
    """The OneAPI error code of a failed answer (``{"error": {"code": …}}``), if any."""
    code = getattr(getattr(exc, "error", None), "code", None)
    if isinstance(code, str) and code:
        return code[:64]
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:  # not JSON: no code to show
        return ""
    error = body.get("error") if isinstance(body, Mapping) else None
    found = error.get("code") if isinstance(error, Mapping) else None
    return found[:64] if isinstance(found, str) else ""


def _retry_after(exc: Any) -> float:
    """Seconds from the answer's ``Retry-After`` header (0 when absent or not a number)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
