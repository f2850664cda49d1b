"""What APIM's language-model log records of a call, as the local gateway emulates it.

The local gateway hands every served call it saw to its language-model sink as an
:class:`Exchange`: the request, and the response as it passed through — for a pass-through
stream, the chunks it relayed, read as they went by without holding any of them back.
:func:`llm_log_records` turns an exchange into the records APIM's ``GatewayLlmLogs`` category
would add to ``ApiManagementGatewayLlmLog`` (:mod:`aoai_helpers.eventlog.llmlog`): one record with the
token counts (``SequenceNumber`` 0), for the successful calls of the language-model operations
(chat, completions, embeddings, Responses).

The counts are the usage the response carried when it carried one (a non-streamed body, a
stream's ``include_usage`` chunk, the Responses API's ``response.completed``) — exactly what
AOAI reported. A stream without a usage chunk is counted the way ingest estimates one: the
prompt from the request (chat format), the completion from the reassembled deltas. Microsoft
does not document what APIM's log holds for such a stream (policies/README.md: its token
metrics "are estimated" when streaming); counting what went by is the emulation's answer, and
for the simulator, which counts with the same tokenizer, it is exact. A client that hung up
mid-stream is counted for what the gateway had received from the backend by then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aoai_helpers.core.events import Usage, UsageEvent
from aoai_helpers.core.usage import resolve_usage
from aoai_helpers.eventlog.llmlog import LlmLogRecord

__all__ = ["LOGGED_OPERATIONS", "Exchange", "llm_log_records"]

#: The operations APIM's language-model log covers (the LLM APIs' operations).
LOGGED_OPERATIONS: Final = frozenset({"chat", "completions", "embeddings", "responses"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call the local gateway forwarded, as its language-model log sees it."""

    request_id: str
    started: datetime
    operation: str
    deployment: str | None
    api_version: str | None
    streaming: bool
    status: int
    request: dict[str, Any] | None
    response_text: str | None  # the body as it went by (a pass-through stream: as relayed)
    usage: Mapping[str, int] | None  # the usage numbers the gateway read, when it read them
    model: str | None
    subscription: str | None = None  # whose call it was (the local token limits count it)


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def llm_log_records(
    exchange: Exchange, deployment_models: Mapping[str, str] | None = None
) -> list[LlmLogRecord]:
    """The records of ``exchange`` (none for a failed call or an operation APIM does not log)."""
    if exchange.operation not in LOGGED_OPERATIONS or not 200 <= exchange.status <= 299:
        return []
    if exchange.usage is not None:
        usage = Usage(
            exchange.usage.get("prompt_tokens", 0),
            exchange.usage.get("completion_tokens", 0),
            exchange.usage.get("total_tokens", 0),
        )
        model = exchange.model
    else:
        event = UsageEvent(
            request_id=exchange.request_id,
            event_version=2,
            exec_time=_naive(exchange.started),
            gateway_region=None,
            gateway_service_name=None,
            subscription_id=None,
            subscription_name=None,
            product_name=None,
            user_name=None,
            user_email=None,
            api_name=None,
            operation_id=None,
            operation=exchange.operation,  # type: ignore[arg-type]  # one of LOGGED_OPERATIONS
            deployment_name=exchange.deployment,
            api_version=exchange.api_version,
            is_streaming=exchange.streaming,
            status_code=exchange.status,
            model=exchange.model,
            usage=None,
            request=exchange.request,
            response_string=exchange.response_text or "",
        )
        models = {k.lower(): v for k, v in (deployment_models or {}).items()}
        resolved = resolve_usage(event, models)
        usage, model = resolved.usage, resolved.model
    return [
        LlmLogRecord(
            correlation_id=exchange.request_id.lower(),
            time_generated=_naive(exchange.started),
            sequence_number=0,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=max(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens),
            model_name=model,
            deployment_name=exchange.deployment,
            is_stream=exchange.streaming,
        )
    ]
