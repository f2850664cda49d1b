"""The usage event's field lists: the v2 contract's fields in order, the usage keys, the caller
fields v1 and v2 share, the original policy's operation ids (docs/architecture.md, "The usage
event"). :mod:`aoai_helpers.core.events` parses events by them; the APIM policy and the local
gateway write them (a test checks the policy's fields against :data:`V2_FIELDS`)."""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "CALLER_FIELDS",
    "LOG_TO_EVENTHUB_LIMIT",
    "OPERATIONS",
    "USAGE_FIELDS",
    "V1_OPERATION_IDS",
    "V2_FIELDS",
    "V2_REQUIRED",
    "Operation",
]

#: APIM's ``log-to-eventhub`` truncates messages at 200 KB (then the JSON no longer parses).
LOG_TO_EVENTHUB_LIMIT: Final = 200 * 1024

Operation = Literal["chat", "completions", "embeddings", "responses", "other"]
OPERATIONS: Final[tuple[str, ...]] = ("chat", "completions", "embeddings", "responses", "other")

#: The v2 fields, in the order the APIM policy and the local gateway write them (contract §3).
V2_FIELDS: Final[tuple[str, ...]] = (
    "EventVersion",
    "RequestId",
    "ExecTimeUTC",
    "GatewayRegion",
    "GatewayServiceName",
    "SubscriptionId",
    "SubscriptionName",
    "ProductName",
    "UserName",
    "UserEmail",
    "ApiName",
    "OperationId",
    "Operation",
    "DeploymentName",
    "ApiVersion",
    "IsStreaming",
    "StatusCode",
    "Model",
    "Usage",
    "Request",
    "ResponseString",
)

#: The keys of the v2 ``Usage`` object.
USAGE_FIELDS: Final[tuple[str, ...]] = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)

#: The original policy's operation ids (spec ``inference.json``) and what they mean.
V1_OPERATION_IDS: Final[dict[str, Operation]] = {
    "chatcompletions_create": "chat",
    "completions_create": "completions",
    "embeddings_create": "embeddings",
}

#: The caller fields shared by v1 and v2 events (as the original policy named them).
CALLER_FIELDS: Final = (
    "GatewayRegion",
    "GatewayServiceName",
    "SubscriptionId",
    "SubscriptionName",
    "ProductName",
    "UserName",
    "UserEmail",
    "ApiName",
    "OperationId",
)
V2_REQUIRED: Final = (
    "EventVersion",
    "RequestId",
    "ExecTimeUTC",
    "Operation",
    "IsStreaming",
    "StatusCode",
)
