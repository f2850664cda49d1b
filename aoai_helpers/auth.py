"""Signing in to Azure on any cloud (azure-identity), kept in one place.

``credential(cloud, method)`` builds the credential for the cloud's authority host:
``default`` (DefaultAzureCredential: environment, workload/managed identity, Azure CLI, …),
``cli`` (the Azure CLI's login; run ``az cloud set --name <cloud>`` first for sovereign
clouds) or ``device-code`` (a code to enter in a browser; works from notebooks and SSH).
"""

from __future__ import annotations

from typing import Any, Literal

from aoai_helpers.clouds import Cloud
from aoai_helpers.exceptions import ConfigError

__all__ = ["CredentialMethod", "credential"]

CredentialMethod = Literal["default", "cli", "device-code"]


def credential(cloud: Cloud, method: CredentialMethod = "default") -> Any:
    """An azure-identity credential for ``cloud`` (``ConfigError`` if azure-identity is missing)."""
    try:
        import azure.identity as identity
    except ImportError:
        raise ConfigError(
            "azure-identity is not installed: pip install 'apim-aoai-proxy[azure]'"
        ) from None
    if method == "cli":
        return identity.AzureCliCredential()
    if method == "device-code":
        return identity.DeviceCodeCredential(authority=cloud.authority_host)
    return identity.DefaultAzureCredential(authority=cloud.authority_host)
