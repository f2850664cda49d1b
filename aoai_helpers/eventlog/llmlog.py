"""APIM's language-model log: its records, how a call's records make its usage, and the local copy.

On Azure, a diagnostic setting sends category ``GatewayLlmLogs`` of the APIM service to Log
Analytics, table ``ApiManagementGatewayLlmLog`` (*Log token usage, prompts, and completions for
LLM APIs*; table reference *ApiManagementGatewayLlmLog*). Its columns, as documented:
``TimeGenerated`` ("when request processing started"), ``CorrelationId`` ("corresponding with
the same field in ApiManagementGatewayLogs"), ``RequestId`` (the language model's request id),
``SequenceNumber`` ("the index of this entry in the message exchange"), ``DeploymentName``,
``ModelName``, ``OperationName``, ``ApiVersion``, ``IsStreamCompletion``, ``PromptTokens``,
``CompletionTokens``, ``TotalTokens``, ``Region``, ``RequestMessages``, ``ResponseMessages``.
"Large requests and responses are split into multiple log entries with sequence numbers", and
"requests and responses … appear in separate log entries that you can correlate by using the
``CorrelationId`` field".

So one call may have several records. :func:`assemble` makes one :class:`LoggedUsage` per
correlation id from all of them, column by column, taking the **largest** value any record
gives (a part that repeats the counts must not add them up; a part without counts must not
erase them); the total is at least prompt + completion. Records are values, never trusted
blindly: :func:`record_from_row` turns a row (from Log Analytics or the local file) into a
:class:`LlmLogRecord`, or ``None`` when it has no correlation id or a count that is not a
non-negative integer.

Sources implement :class:`LlmLogSource` (``fetch(start, end)``: the records whose
``TimeGenerated`` falls in the window). :class:`LocalLlmLog` is the local gateway's copy of the
table: JSON lines with the table's column names in ``<state_dir>/llm-log/`` (local mode; the
gateway writes what APIM would). The Log Analytics source is in :mod:`aoai_helpers.eventlog.llmlog_azure`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from aoai_helpers.exceptions import InputError

__all__ = [
    "COLUMNS",
    "TABLE",
    "LlmLogRecord",
    "LlmLogSource",
    "LocalLlmLog",
    "LoggedUsage",
    "assemble",
    "record_from_row",
]

#: The Log Analytics table of the ``GatewayLlmLogs`` diagnostic category.
TABLE: Final = "ApiManagementGatewayLlmLog"
#: The columns this project reads (and the local gateway writes), in the table's names.
COLUMNS: Final[tuple[str, ...]] = (
    "TimeGenerated",
    "CorrelationId",
    "RequestId",
    "SequenceNumber",
    "OperationName",
    "DeploymentName",
    "ModelName",
    "ApiVersion",
    "IsStreamCompletion",
    "PromptTokens",
    "CompletionTokens",
    "TotalTokens",
    "Region",
)
_INT32: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class LlmLogRecord:
    """One record of the language-model log (the columns reconciliation uses)."""

    correlation_id: str  # lower-cased: the event's RequestId (context.RequestId)
    time_generated: datetime  # naive UTC
    sequence_number: int
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    model_name: str | None
    deployment_name: str | None
    is_stream: bool | None

    def as_row(self) -> dict[str, Any]:
        """The record with the table's column names (what the local log stores)."""
        return {
            "TimeGenerated": _iso(self.time_generated),
            "CorrelationId": self.correlation_id,
            "SequenceNumber": self.sequence_number,
            "DeploymentName": self.deployment_name,
            "ModelName": self.model_name,
            "IsStreamCompletion": self.is_stream,
            "PromptTokens": self.prompt_tokens,
            "CompletionTokens": self.completion_tokens,
            "TotalTokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class LoggedUsage:
    """The usage of one call as its log records give it (see :func:`assemble`)."""

    correlation_id: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    model_name: str | None
    deployment_name: str | None
    time_generated: datetime
    records: int


@runtime_checkable
class LlmLogSource(Protocol):
    """Where the language-model log is read from."""

    @property
    def name(self) -> str:
        """A stable name of the source: the key of its reconciliation watermark."""

    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        """The records with ``start <= TimeGenerated < end`` (naive UTC)."""


def _iso(when: datetime) -> str:
    return when.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and value:
        try:
            found = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return found.astimezone(UTC).replace(tzinfo=None) if found.tzinfo else found


def _count(value: Any) -> tuple[bool, int | None]:
    """(valid, value): a count is absent (None), or an integer in 0..2**31-1."""
    if value is None:
        return True, None
    if isinstance(value, bool):
        return False, None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value <= _INT32:
        return True, value
    return False, None


def _text(value: Any, limit: int = 100) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def record_from_row(
    row: Mapping[str, Any], correlation_column: str = "CorrelationId"
) -> LlmLogRecord | None:
    """A record from a row keyed by the table's column names; ``None`` when it cannot be used.

    ``correlation_column`` names the column holding the call's request id (the setting
    ``llm_log.correlation_column``).
    """
    raw_id = row.get(correlation_column)
    when = _time(row.get("TimeGenerated"))
    if not isinstance(raw_id, str) or not raw_id.strip() or when is None:
        return None
    counts = [_count(row.get(k)) for k in ("PromptTokens", "CompletionTokens", "TotalTokens")]
    if not all(ok for ok, _ in counts):
        return None
    ok, seq = _count(row.get("SequenceNumber"))
    stream = row.get("IsStreamCompletion")
    return LlmLogRecord(
        correlation_id=raw_id.strip().lower()[:64],
        time_generated=when,
        sequence_number=seq if ok and seq is not None else 0,
        prompt_tokens=counts[0][1],
        completion_tokens=counts[1][1],
        total_tokens=counts[2][1],
        model_name=_text(row.get("ModelName")),
        deployment_name=_text(row.get("DeploymentName")),
        is_stream=stream if isinstance(stream, bool) else None,
    )


def assemble(records: Iterable[LlmLogRecord]) -> dict[str, LoggedUsage]:
    """One :class:`LoggedUsage` per correlation id whose records carry any token count.

    Column by column the largest value of any record wins (see the module docstring); the
    total is at least prompt + completion; the model and deployment are the first non-empty
    ones in sequence order; the time is the earliest.
    """
    by_id: dict[str, set[LlmLogRecord]] = {}
    for record in records:  # a record delivered twice is one record
        by_id.setdefault(record.correlation_id, set()).add(record)
    out: dict[str, LoggedUsage] = {}
    for cid, distinct in by_id.items():
        parts = sorted(distinct, key=lambda r: (r.sequence_number, r.time_generated))
        prompts = [r.prompt_tokens for r in parts if r.prompt_tokens is not None]
        completions = [r.completion_tokens for r in parts if r.completion_tokens is not None]
        totals = [r.total_tokens for r in parts if r.total_tokens is not None]
        if not (prompts or completions or totals):
            continue  # message parts only: no usage to take
        prompt, completion = max(prompts, default=0), max(completions, default=0)
        total = max(max(totals, default=0), prompt + completion)
        if total > _INT32:
            continue
        out[cid] = LoggedUsage(
            correlation_id=cid,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            model_name=next((r.model_name for r in parts if r.model_name), None),
            deployment_name=next((r.deployment_name for r in parts if r.deployment_name), None),
            time_generated=min(r.time_generated for r in parts),
            records=len(parts),
        )
    return out


class LocalLlmLog:
    """The local gateway's language-model log: JSON lines in ``<directory>/<TABLE>.jsonl``.

    Appends are one ``write`` of whole lines under an exclusive ``flock`` (several producers,
    like the local event log), then an ``fsync`` when ``fsync`` is on. :meth:`fetch` reads the
    whole file and keeps the records of the window; a torn last line (a crash mid-write) and
    lines that are not records are skipped, never fatal.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{TABLE}.jsonl"
        self._fsync = fsync
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"local:{self.directory.resolve()}"

    def append(self, records: Sequence[LlmLogRecord]) -> None:
        """Add ``records`` at the end of the log."""
        if not records:
            return
        payload = b"".join(orjson.dumps(r.as_row()) + b"\n" for r in records)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view) :]
                    if self._fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise InputError(
                f"cannot write the language-model log {self.path}: {exc.strerror or exc}"
            ) from None

    def fetch(self, start: datetime, end: datetime) -> list[LlmLogRecord]:
        """The records with ``start <= TimeGenerated < end`` (naive UTC)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise InputError(
                f"cannot read the language-model log {self.path}: {exc.strerror or exc}"
            ) from None
        out = []
        for line in data.splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                row = orjson.loads(line)
                record = record_from_row(row) if isinstance(row, dict) else None
                if record is not None and start <= record.time_generated < end:
                    out.append(record)
        return out
