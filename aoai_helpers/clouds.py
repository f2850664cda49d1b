"""Endpoints, credential scopes and DNS suffixes per Azure cloud: the one table the code reads.

Sources (``reference/azure-facts.md``, "Clouds"): azure-identity ``AzureAuthorityHosts``;
azure-mgmt-core ``get_arm_endpoints``; azure-docs ``azure-government/compare-azure-government-
global-azure.md``. The AOAI suffix and Cognitive Services audience for Azure China come from the
SDKs' audience constants (``openai.azure.cn`` is not confirmed by a Microsoft doc): a wrong
value there fails loudly at sign-in or DNS, never silently.

Log Analytics query endpoints (the language-model log, :mod:`aoai_helpers.eventlog.llmlog_azure`):
``https://api.loganalytics.io`` with token audience ``https://api.loganalytics.io`` (*Access
the Azure Monitor Log Analytics API*: "Use ``resource=https://api.loganalytics.io``"; the
``api.loganalytics.azure.com`` name the page also gives is not used, as no page says a token
for it is accepted); Azure China ``https://api.loganalytics.azure.cn`` (the docs.azure.cn copy
of the same page); US Government ``https://api.loganalytics.us`` (from the Azure SDKs' cloud
configuration — azure-monitor-query's sovereign sample, azure-sdk-for-go ``azlogs`` and
.NET ``LogsQueryAudience``; no Learn page gives it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aoai_helpers.exceptions import ConfigError

__all__ = ["CLOUDS", "Cloud", "get_cloud"]


@dataclass(frozen=True, slots=True)
class Cloud:
    """One Azure cloud's endpoints."""

    name: str
    authority_host: str  # for azure-identity credentials (``authority=``)
    arm_endpoint: str  # ARM base URL (``base_url=`` of management clients)
    arm_scope: str  # credential scope for ARM (``credential_scopes=``)
    eventhub_suffix: str  # <namespace>.<suffix>
    sql_suffix: str  # <server>.<suffix>
    apim_gateway_suffix: str  # <service>.<suffix>
    aoai_suffix: str  # <resource>.<suffix>
    cognitive_resource: str  # managed-identity audience for AOAI (authentication-managed-identity)
    scm_suffix: str  # Kudu / SCM: <app>.scm.<suffix>
    storage_suffix: str  # blob checkpoints: <account>.blob.<suffix>
    log_analytics_endpoint: str  # Log Analytics query API (LogsQueryClient ``endpoint=``)

    @property
    def log_analytics_scope(self) -> str:
        """Credential scope of the Log Analytics query API (its audience + ``/.default``)."""
        return f"{self.log_analytics_endpoint}/.default"

    def eventhub_host(self, namespace: str) -> str:
        """``<namespace>.servicebus.…`` (a full host name is returned as it is)."""
        return namespace if "." in namespace else f"{namespace}.{self.eventhub_suffix}"


CLOUDS: Final[dict[str, Cloud]] = {
    "AzureCloud": Cloud(
        name="AzureCloud",
        authority_host="login.microsoftonline.com",
        arm_endpoint="https://management.azure.com",
        arm_scope="https://management.azure.com/.default",
        eventhub_suffix="servicebus.windows.net",
        sql_suffix="database.windows.net",
        apim_gateway_suffix="azure-api.net",
        aoai_suffix="openai.azure.com",
        cognitive_resource="https://cognitiveservices.azure.com",
        scm_suffix="azurewebsites.net",
        storage_suffix="core.windows.net",
        log_analytics_endpoint="https://api.loganalytics.io",
    ),
    "AzureChinaCloud": Cloud(
        name="AzureChinaCloud",
        authority_host="login.chinacloudapi.cn",
        arm_endpoint="https://management.chinacloudapi.cn",
        arm_scope="https://management.chinacloudapi.cn/.default",
        eventhub_suffix="servicebus.chinacloudapi.cn",
        sql_suffix="database.chinacloudapi.cn",
        apim_gateway_suffix="azure-api.cn",
        aoai_suffix="openai.azure.cn",
        cognitive_resource="https://cognitiveservices.azure.cn",
        scm_suffix="chinacloudsites.cn",
        storage_suffix="core.chinacloudapi.cn",
        log_analytics_endpoint="https://api.loganalytics.azure.cn",
    ),
    "AzureUSGovernment": Cloud(
        name="AzureUSGovernment",
        authority_host="login.microsoftonline.us",
        arm_endpoint="https://management.usgovcloudapi.net",
        arm_scope="https://management.core.usgovcloudapi.net/.default",
        eventhub_suffix="servicebus.usgovcloudapi.net",
        sql_suffix="database.usgovcloudapi.net",
        apim_gateway_suffix="azure-api.us",
        aoai_suffix="openai.azure.us",
        cognitive_resource="https://cognitiveservices.azure.us",
        scm_suffix="azurewebsites.us",
        storage_suffix="core.usgovcloudapi.net",
        log_analytics_endpoint="https://api.loganalytics.us",
    ),
}


def get_cloud(name: str) -> Cloud:
    """The cloud called ``name`` (``ConfigError`` naming the choices otherwise)."""
    try:
        return CLOUDS[name]
    except KeyError:
        raise ConfigError(f"unknown cloud {name!r}; choose one of: {', '.join(CLOUDS)}") from None
