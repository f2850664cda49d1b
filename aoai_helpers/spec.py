"""The declarative deployment spec (``gateway.yaml``, docs/architecture.md), validated by pydantic.

One file describes a deployment: the cloud, the APIM service, the AOAI backends and their
deployments, the product and one subscription per business unit, the capture mode, the Event
Hub and the database. Provisioning (``aoai_helpers.azure.apim``), the function deployment and local
mode (``aoai_helpers.local``) all read the same :class:`Spec`; notebooks load it once.

:func:`load_spec` turns YAML into a :class:`Spec` and every problem into one
:class:`~aoai_helpers.exceptions.ConfigError` that names the offending field(s), never a
traceback. Unknown keys are errors (a typo must not silently fall back to a default).
A sample spec ships as ``examples/gateway.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aoai_helpers.clouds import get_cloud
from aoai_helpers.exceptions import ConfigError, InputError

__all__ = [
    "CLOUDS",
    "MAX_RETENTION_DAYS",
    "AoaiEndpoints",
    "Apim",
    "ApimSku",
    "Backend",
    "Capture",
    "CaptureMode",
    "CloudName",
    "Consumer",
    "Database",
    "EventHub",
    "EventHubTier",
    "Fault",
    "FunctionApp",
    "LlmLog",
    "Local",
    "Product",
    "Reconcile",
    "Simulator",
    "Spec",
    "Subscription",
    "TokenLimit",
    "load_spec",
    "parse_spec",
    "retention_problem",
    "token_limit_problem",
]

CloudName = Literal["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"]
CLOUDS: Final[tuple[str, ...]] = ("AzureCloud", "AzureChinaCloud", "AzureUSGovernment")
CaptureMode = Literal["buffered", "passthrough", "passthrough_usage"]

#: APIM resource names (ids of products, subscriptions, named values, loggers, APIs).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
Ident = Annotated[str, Field(pattern=_ID.pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenLimit(_Model):
    """Per-subscription limits enforced by APIM (``llm-token-limit``)."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    token_quota: int | None = Field(default=None, gt=0)
    token_quota_period: Literal["Hourly", "Daily", "Weekly", "Monthly", "Yearly"] | None = None

    @model_validator(mode="after")
    def _quota_has_period(self) -> TokenLimit:
        if (self.token_quota is None) != (self.token_quota_period is None):
            raise ValueError("token_quota and token_quota_period go together")
        if self.tokens_per_minute is None and self.token_quota is None:
            raise ValueError("set tokens_per_minute and/or token_quota")
        return self


class Subscription(_Model):
    """One APIM subscription: one business unit's key."""

    id: Ident
    display_name: str = Field(min_length=1, max_length=100)
    business_unit: str = Field(min_length=1, max_length=100)
    cost_center: str | None = Field(default=None, max_length=50)
    owner_name: str | None = Field(default=None, max_length=50)
    owner_email: str | None = Field(default=None, max_length=50)
    token_limit: TokenLimit | None = None
    monthly_budget: float | None = Field(default=None, ge=0)  # in the rates' currency


class Backend(_Model):
    """One Azure OpenAI resource and the deployments callers may use on it.

    ``deployments`` maps deployment name → model as the response reports it (e.g.
    ``gpt-4o-2024-11-20``). ``auth`` is how APIM authenticates to it: its managed identity, or
    the key held in the named value ``key_named_value`` (a secret, or a Key Vault reference
    when ``key_vault_secret_id`` is set).
    """

    name: Ident = "aoai"
    endpoint: str
    auth: Literal["managed_identity", "key"] = "managed_identity"
    key_named_value: Ident = "aoai-backend-key"
    key_vault_secret_id: str | None = None
    deployments: dict[str, str] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("endpoint must look like https://<resource>.openai.azure.com/")
        return value.rstrip("/")


class AoaiEndpoints(_Model):
    """Azure OpenAI's DNS suffix and managed-identity token audience on this spec's cloud.

    ``None`` takes the cloud's value (:mod:`aoai_helpers.clouds`): documented for global Azure
    (``openai.azure.com``, ``https://cognitiveservices.azure.com``) and US Government
    (``openai.azure.us``, Azure OpenAI in Azure Government); for Azure China
    (``openai.azure.cn``, ``https://cognitiveservices.azure.cn``) no Microsoft page was found
    that confirms either, only the SDKs' constants — set them here if yours differ."""

    endpoint_suffix: str | None = Field(default=None, pattern=r"^[a-z0-9.-]+\.[a-z]{2,}$")
    audience: str | None = Field(default=None, pattern=r"^https://[^/\s]+/?$")


class Product(_Model):
    id: Ident = "aoai-chargeback"
    display_name: str = "Azure OpenAI (charged back)"
    description: str = "Azure OpenAI through APIM; every call's tokens are billed to its BU."


class Capture(_Model):
    """What the gateway captures of each call.

    ``streaming`` (policies/README.md, "Capture modes"):

    - ``passthrough`` (default): streams go to the client chunk by chunk, untouched; the event
      cannot carry their usage (the gateway never reads a streamed body), so ingest stores the
      prompt (``prompt_only``) and reconciliation takes the exact numbers from APIM's
      language-model log (``llm_log``) → ``reconciled``.
    - ``passthrough_usage``: the same, and ``stream_options.include_usage`` is added to
      streamed chat and completions requests, so the stream ends with AOAI's own usage chunk
      for the language-model log to record. Clients that did not ask for it see one extra
      final chunk with ``choices: []`` (nothing can take it out without buffering).
    - ``buffered``: the gateway reads the whole stream (the client gets it at the end) and the
      event carries the usage (``reported``); a usage chunk it asked for is removed from what
      the client receives.

    ``include_usage_from``: the first api-version that accepts ``stream_options.include_usage``
    (``2024-09-01-preview``); it is injected for this one and every later one (compared by the
    date they start with), for those listed in ``include_usage_api_versions``, and always on the
    v1 API. A buffered stream of an older api-version keeps its reply (cut to fit the event) so
    ingest can count it. ``payload``: also log request/response text (off: no prompt text is
    logged unless needed to estimate usage).

    ``allow_unmetered``: operations the gateway serves although their usage is not metered in
    tokens (``images``, ``audio``, ``files``, ``batches``, ``fine_tuning``, ``assistants``,
    ``vector_stores``, ``realtime``; :mod:`aoai_helpers.core.routes`). Refused by default (403); when
    allowed, each call is billed as one *unpriced* call of its BU (``UsageSource``
    ``unmetered``, ``Cost`` NULL), never as 0. ``max_json_depth``: request bodies nested deeper
    are refused (400), never forwarded — the policy's JSON parser (Json.NET) stops at 64 by
    default.
    """

    streaming: CaptureMode = "passthrough"
    include_usage_from: str = Field(default="2024-09-01-preview", pattern=r"^\d{4}-\d{2}-\d{2}")
    allow_unmetered: tuple[
        Literal[
            "images",
            "audio",
            "files",
            "batches",
            "fine_tuning",
            "assistants",
            "vector_stores",
            "realtime",
        ],
        ...,
    ] = ()
    max_json_depth: int = Field(default=64, ge=2, le=256)
    include_usage_api_versions: tuple[str, ...] = (
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-10-21",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    )
    payload: bool = False


class LlmLog(_Model):
    """APIM's language-model log: the exact usage of calls the gateway could not read.

    A diagnostic setting sends category ``GatewayLlmLogs`` of the APIM service to the Log
    Analytics workspace ``workspace_resource_id`` (resource-specific table
    ``ApiManagementGatewayLlmLog``: one record per call with ``CorrelationId``,
    ``PromptTokens``, ``CompletionTokens``, ``TotalTokens``, ``ModelName``…), and the API's
    diagnostic turns language-model logging on — token counts only, unless ``log_messages``
    (prompts and completions, each cut at ``max_message_bytes``). ``workspace_id`` is the
    workspace's GUID ("Workspace ID"), which the query API addresses. ``correlation_column``
    is the column holding the call's ``context.RequestId`` (the event's ``RequestId``).
    Without a workspace nothing is provisioned and reconciliation has no source on Azure.
    """

    workspace_resource_id: str | None = Field(
        default=None,
        pattern=r"(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
        r"Microsoft\.OperationalInsights/workspaces/[^/]+$",
    )
    workspace_id: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
    )
    diagnostic_setting: Ident = "aoai-llm-logs"
    log_messages: bool = False
    max_message_bytes: int = Field(default=32768, ge=1, le=262144)
    correlation_column: str = Field(default="CorrelationId", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Reconcile(_Model):
    """How rows are matched with the language-model log (``reconcile``; the function's timer).

    ``grace_hours``: how long a call may stay provisional before it is listed as unmatched
    (and before its month may be issued without ``--allow-provisional``); the log's documented
    ingestion delay is minutes, up to ~20. ``lookback_minutes``: each run reads the log again
    from this long before the last run's end (records arrive late; re-reading is harmless).
    ``schedule``: the timer trigger's NCRONTAB expression. ``interval_seconds``: how often
    ``local up`` reconciles.
    """

    grace_hours: float = Field(default=6.0, gt=0, le=24 * 31)
    lookback_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)
    schedule: str = Field(default="0 */10 * * * *", min_length=11)
    interval_seconds: float = Field(default=1.0, gt=0, le=3600)


#: APIM tiers (the service's ``sku.name``). Consumption has no users (no developer portal) and
#: cannot save ``llm-token-limit`` (policy reference, Usage: "Gateways: classic, v2,
#: self-hosted, workspace" — no consumption).
ApimSku = Literal[
    "Consumption", "Developer", "Basic", "Standard", "Premium", "BasicV2", "StandardV2", "PremiumV2"
]
#: Event Hubs namespace tiers and their longest ``messageRetentionInDays`` (Event Hubs quotas:
#: "Maximum retention period: 1 day / 7 days / 90 days / 90 days").
EventHubTier = Literal["Basic", "Standard", "Premium", "Dedicated"]
MAX_RETENTION_DAYS: dict[str, int] = {"Basic": 1, "Standard": 7, "Premium": 90, "Dedicated": 90}


class Apim(_Model):
    """The existing APIM service. ``sku``: its tier when known offline (``provision plan`` reads
    the live one and checks the spec against it); ``None``: known only from ARM."""

    resource_group: str = Field(min_length=1, max_length=90)
    service_name: str = Field(min_length=1, max_length=50)
    sku: ApimSku | None = None
    region: str = "West Europe"
    api_id: Ident = "azure-openai"
    api_display_name: str = "Azure OpenAI"
    api_path: str = "openai"
    api_version: str = "2024-10-21"
    openapi_spec: str | None = None  # a URL or a local file; default: the published inference spec


class EventHub(_Model):
    """The Event Hub APIM logs to and the function reads.

    ``auth`` is how the APIM logger sends: its managed identity (``identity_client_id``:
    ``SystemAssigned`` or a user-assigned identity's client id) or a connection string.
    ``create: true`` also provisions, in the existing ``namespace``: the hub, the ingestion
    consumer group and two least-privilege rules (``send_rule``: Send only, for APIM;
    ``listen_rule``: Listen only, for the function).
    """

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    logger_id: Ident = "aoai-usage-logger"
    auth: Literal["managed_identity", "connection_string"] = "managed_identity"
    identity_client_id: str = "SystemAssigned"
    consumer_group: str = "$Default"
    resource_group: str | None = None  # default: apim.resource_group
    create: bool = False
    partition_count: int = Field(default=4, ge=1, le=32)
    retention_days: int = Field(default=7, ge=1, le=90)
    tier: EventHubTier | None = None  # known offline; provision plan reads the live one

    @model_validator(mode="after")
    def _retention_fits_tier(self) -> EventHub:
        if self.tier is not None and (problem := retention_problem(self.tier, self.retention_days)):
            raise ValueError(problem)
        return self

    send_rule: Ident = "apim-send"
    listen_rule: Ident = "ingest-listen"


class FunctionApp(_Model):
    """The Azure Function that ingests the events (``function build|deploy``).

    ``eventhub_auth``: how the function reads the hub — its managed identity (identity-based
    connection ``AOAI_EVENTHUB__fullyQualifiedNamespace``) or the Listen-only connection
    string in app setting ``AOAI_EVENTHUB``.
    """

    name: str = Field(min_length=2, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")
    resource_group: str | None = None  # default: apim.resource_group
    eventhub_auth: Literal["managed_identity", "connection_string"] = "managed_identity"
    identity_client_id: str | None = None  # a user-assigned identity; None: system-assigned
    max_batch_size: int = Field(default=500, ge=1, le=10000)


class Consumer(_Model):
    """The ``consume`` command: Event Hubs outside Functions (or the local log in local mode)."""

    checkpoint_store: Literal["database", "blob"] = "database"
    blob_account_url: str | None = None  # https://<account>.blob.core.windows.net
    blob_container: str = "aoai-checkpoints"
    batch_size: int = Field(default=500, ge=1, le=10000)


class Database(_Model):
    url: str = "sqlite:///data/aoai_usage.db"


class Fault(_Model):
    """A backend fault the simulator injects, by configuration (never by prompt text).

    Applies to every ``every``-th matching request (1 = all of them), counted per fault;
    ``deployments`` limits it to those deployment names (empty: all).
    """

    kind: Literal["rate_limit", "server_error", "content_filter", "stream_cut"]
    every: int = Field(default=1, ge=1)
    deployments: tuple[str, ...] = ()
    retry_after_ms: int = Field(default=1000, ge=0)
    cut_after_chunks: int = Field(default=3, ge=0)


class Simulator(_Model):
    """The AOAI simulator's latency model and faults (local mode)."""

    ttft_ms: float = Field(default=0.0, ge=0)
    tokens_per_second: float = Field(default=0.0, ge=0)  # 0: as fast as possible
    max_reply_tokens: int = Field(default=40, ge=1)
    faults: tuple[Fault, ...] = ()


class Local(_Model):
    """Local mode's servers. ``header_timeout_seconds``: a connection that has not sent a
    request's headers by then is closed (slow or idle sockets); ``body_timeout_seconds``: a body
    that has not fully arrived by then is answered 408 and not forwarded."""

    host: str = "127.0.0.1"
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    gateway_port: int = Field(default=0, ge=0, le=65535)  # 0: any free port
    simulator_port: int = Field(default=0, ge=0, le=65535)
    state_dir: str = ".aoai-local"
    simulator: Simulator = Simulator()


class Spec(_Model):
    """A whole deployment (docs/architecture.md)."""

    cloud: CloudName = "AzureCloud"
    subscription_id: str | None = None  # the Azure subscription (ARM), not an APIM one
    apim: Apim
    backends: tuple[Backend, ...] = Field(min_length=1)
    aoai: AoaiEndpoints = AoaiEndpoints()
    product: Product = Product()
    subscriptions: tuple[Subscription, ...] = Field(min_length=1)
    capture: Capture = Capture()
    llm_log: LlmLog = LlmLog()
    reconcile: Reconcile = Reconcile()
    event_hub: EventHub
    database: Database = Database()
    function: FunctionApp | None = None
    consumer: Consumer = Consumer()
    local: Local = Local()

    @model_validator(mode="after")
    def _unique(self) -> Spec:
        _no_duplicates("subscriptions", [s.id.lower() for s in self.subscriptions])
        _no_duplicates("backends", [b.name.lower() for b in self.backends])
        _no_duplicates("deployments", [d.lower() for b in self.backends for d in b.deployments])
        if self.apim.sku is not None:
            problem = token_limit_problem(self, self.apim.sku)
            if problem:
                raise ValueError(problem)
        return self

    def aoai_suffix(self) -> str:
        """The AOAI endpoint DNS suffix: ``aoai.endpoint_suffix``, else the cloud's."""
        return self.aoai.endpoint_suffix or get_cloud(self.cloud).aoai_suffix

    def aoai_audience(self) -> str:
        """The managed-identity audience for AOAI: ``aoai.audience``, else the cloud's."""
        return (self.aoai.audience or get_cloud(self.cloud).cognitive_resource).rstrip("/")

    def owners_logged(self, sku: str | None = None) -> bool:
        """Whether the gateway logs subscription owners (``UserName``/``UserEmail``): APIM
        fills ``context.User`` from the subscription's owner, a user of the service; the
        Consumption tier has none. ``sku`` defaults to ``apim.sku`` (unknown: logged)."""
        return (sku or self.apim.sku) != "Consumption"

    def for_cloud(self, cloud: str | None) -> Spec:
        """The same spec on ``cloud`` (a ``--cloud`` override applies everywhere: endpoints,
        audiences, suffixes)."""
        if not cloud or cloud == self.cloud:
            return self
        return self.model_copy(update={"cloud": get_cloud(cloud).name})

    def with_simulator(self, **changes: Any) -> Spec:
        """The same spec with ``local.simulator`` fields replaced (e.g. ``ttft_ms=250``)."""
        simulator = self.local.simulator.model_copy(update=changes)
        local = self.local.model_copy(update={"simulator": simulator})
        return self.model_copy(update={"local": local})

    def deployment_models(self) -> dict[str, str]:
        """Deployment name → model, across all backends."""
        return {d: m for b in self.backends for d, m in b.deployments.items()}

    def backend_for(self, deployment: str) -> Backend | None:
        """The backend serving ``deployment`` (case-insensitive), if any."""
        wanted = deployment.lower()
        for backend in self.backends:
            if any(d.lower() == wanted for d in backend.deployments):
                return backend
        return None


def token_limit_problem(spec: Spec, sku: str) -> str | None:
    """Why ``spec``'s token limits cannot be saved on an APIM service of tier ``sku``, if so."""
    limited = [s.id for s in spec.subscriptions if s.token_limit is not None]
    if sku == "Consumption" and limited:
        return (
            f"subscriptions {', '.join(limited)} have token_limit, but llm-token-limit cannot be "
            "saved on the Consumption tier of APIM: remove token_limit or use a classic or v2 tier"
        )
    return None


def retention_problem(tier: str, days: int) -> str | None:
    """Why ``days`` of retention do not fit a ``tier`` namespace, if so (unknown tier: 90 days)."""
    most = MAX_RETENTION_DAYS.get(tier, 90)
    if days <= most:
        return None
    return (
        f"event_hub.retention_days {days} exceeds the {tier} tier's maximum of {most} "
        f"day{'s' if most != 1 else ''} (Event Hubs quotas); use a Premium or Dedicated namespace "
        "for longer retention"
    )


def _no_duplicates(what: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {', '.join(dupes)}")


def parse_spec(data: Any, source: str = "spec") -> Spec:
    """Validate already-loaded data (a mapping) as a :class:`Spec`; ``ConfigError`` if invalid."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{loc}: {err['msg']}")
        raise ConfigError(f"{source} is invalid: " + "; ".join(problems)) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file (``InputError`` if unreadable, ``ConfigError`` if invalid)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"spec file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read spec file {p}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p} is not valid YAML{where}") from None
    return parse_spec(data, str(p))
