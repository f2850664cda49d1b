"""Every Azure RBAC role the spec's options need, for every identity: one list, pure.

``provision plan`` and ``function deploy`` print it (they never grant roles: granting needs
Owner or User Access Administrator, which the people who run this toolkit rarely hold);
``function deploy`` checks the function's own needs it can see (:mod:`aoai_helpers.azure.functions.
identity`). Role ids are the built-in role definitions' GUIDs (*Azure built-in roles*,
https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).

Who needs what, and the page that says so:

- APIM → Azure OpenAI with its managed identity: *Cognitive Services OpenAI User* on the AOAI
  resource (*Authenticate and authorize access to Azure OpenAI APIs using API Management*).
- APIM → Key Vault, for a backend key held as a Key Vault reference (``key_vault_secret_id``):
  *Key Vault Secrets User* on the vault for APIM's system-assigned identity (the named value is
  created without ``identityClientId``: "Null for SystemAssignedIdentity",
  ``KeyVaultContractCreateProperties``), on a vault with the Azure RBAC permission model; a
  vault with access policies needs a policy granting secret Get and List instead (azure-docs
  ``includes/api-management-key-vault-access.md``: "Depending on the permission model,
  configure either a key vault access policy or Azure RBAC access"; the APIM lab,
  https://azure.github.io/apim-lab/apim-lab/7-security/security-7-3-managed-identities.html:
  "select Key Vault Secrets User"). Without it the named value cannot be resolved and the
  backend gets no key. Role id 4633458b-17de-408a-b874-0445c86b69e6: as public templates grant
  it (e.g. ``subscriptionResourceId('Microsoft.Authorization/roleDefinitions',
  '4633458b-…') // Key Vault Secrets User``), not read from the built-in roles page here.
- APIM's logger → Event Hubs with a managed identity: *Azure Event Hubs Data Sender* on the hub
  (*Log events to Azure Event Hubs*, "Configure a managed identity").
- The function's Event Hubs trigger with an identity-based connection: *Azure Event Hubs Data
  Receiver* on the hub (*Azure Event Hubs trigger for Azure Functions*, "Identity-based
  connections": "Trigger — Azure Event Hubs Data Receiver, Azure Event Hubs Data Owner").
- The reconcile timer and ``reconcile`` CLI → the language-model log: *Log Analytics Reader* on
  the workspace (*Query logs with the Log Analytics API*).
- ``consume`` with a signed-in identity: *Azure Event Hubs Data Receiver* on the hub; with blob
  checkpoints, *Storage Blob Data Contributor* on the checkpoint account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from aoai_helpers.spec import Spec

__all__ = [
    "COGNITIVE_SERVICES_OPENAI_USER",
    "EVENT_HUBS_DATA_OWNER",
    "EVENT_HUBS_DATA_RECEIVER",
    "EVENT_HUBS_DATA_SENDER",
    "KEY_VAULT_SECRETS_USER",
    "LOG_ANALYTICS_READER",
    "STORAGE_BLOB_DATA_CONTRIBUTOR",
    "Principal",
    "RoleNeed",
    "key_vault_of",
    "render_roles",
    "required_roles",
]

COGNITIVE_SERVICES_OPENAI_USER: Final = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
EVENT_HUBS_DATA_SENDER: Final = "2b629674-e913-4c01-ae53-ef4638d8f975"
EVENT_HUBS_DATA_RECEIVER: Final = "a638d3c7-ab3a-418d-83e6-5f17a39d4fde"
EVENT_HUBS_DATA_OWNER: Final = "f526a384-b230-433a-b45c-95f59c4a2dec"
LOG_ANALYTICS_READER: Final = "73c42c96-874c-492b-b04d-ab87d138a893"
KEY_VAULT_SECRETS_USER: Final = "4633458b-17de-408a-b874-0445c86b69e6"
STORAGE_BLOB_DATA_CONTRIBUTOR: Final = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"

#: Whose identity: APIM's (backend, logger), the function app's (trigger, timer), or the one
#: a person or pipeline signs in with to run a command (``reconcile``, ``consume``).
Principal = Literal["apim", "function", "operator"]


@dataclass(frozen=True)
class RoleNeed:
    """One role one identity needs on one resource."""

    principal: Principal
    identity: str  # who, in words ("APIM's system-assigned identity", "identity <client id>")
    role: str  # the built-in role's name
    role_id: str  # its definition GUID
    scope: str  # the resource, as the spec names it (an ARM id where the spec has one)
    why: str  # what fails without it

    def line(self) -> str:
        return (
            f"'{self.role}' (role {self.role_id}) for {self.identity} on {self.scope}: {self.why}"
        )


def _apim_identity(client_id: str | None) -> str:
    if not client_id or client_id == "SystemAssigned":
        return "APIM's system-assigned identity"
    return f"APIM's user-assigned identity {client_id}"


def required_roles(spec: Spec) -> list[RoleNeed]:
    """The roles ``spec``'s managed-identity options need, APIM's first, then the function's,
    then the operators'. Connection-string and key options need none."""
    return _apim_roles(spec) + _function_roles(spec) + _operator_roles(spec)


def _apim_roles(spec: Spec) -> list[RoleNeed]:
    """APIM's: the backends' OpenAI access, the Key Vaults holding their keys, the hub."""
    out: list[RoleNeed] = []
    for backend in spec.backends:
        if backend.auth == "managed_identity":
            out.append(
                RoleNeed(
                    "apim",
                    _apim_identity(None),
                    "Cognitive Services OpenAI User",
                    COGNITIVE_SERVICES_OPENAI_USER,
                    backend.endpoint,
                    f"backend {backend.name} refuses APIM's calls (401)",
                )
            )
    vaults: dict[str, list[str]] = {}  # vault → the backends whose key it holds
    for backend in spec.backends:
        if backend.auth == "key" and backend.key_vault_secret_id:
            vaults.setdefault(key_vault_of(backend.key_vault_secret_id), []).append(backend.name)
    for vault, names in vaults.items():
        out.append(
            RoleNeed(
                "apim",
                _apim_identity(None),
                "Key Vault Secrets User",
                KEY_VAULT_SECRETS_USER,
                vault,
                f"the Key Vault named value of backend {', '.join(names)} cannot be resolved: "
                "the backend gets no key (a vault with access policies needs a policy granting "
                "secret Get and List instead)",
            )
        )
    eh = spec.event_hub
    hub = f"hub {eh.namespace}/{eh.name}"
    if eh.auth == "managed_identity":
        out.append(
            RoleNeed(
                "apim",
                _apim_identity(eh.identity_client_id),
                "Azure Event Hubs Data Sender",
                EVENT_HUBS_DATA_SENDER,
                hub,
                "the logger cannot send: calls are served but no event is logged",
            )
        )
    return out


def _function_roles(spec: Spec) -> list[RoleNeed]:
    """The ingestion function's: receiving from the hub, reading the language-model log."""
    out: list[RoleNeed] = []
    eh = spec.event_hub
    hub = f"hub {eh.namespace}/{eh.name}"
    fn = spec.function
    if fn is None:
        return out
    who = (
        f"function app {fn.name}'s user-assigned identity {fn.identity_client_id}"
        if fn.identity_client_id
        else f"function app {fn.name}'s system-assigned identity"
    )
    if fn.eventhub_auth == "managed_identity":
        out.append(
            RoleNeed(
                "function",
                who,
                "Azure Event Hubs Data Receiver",
                EVENT_HUBS_DATA_RECEIVER,
                hub,
                "the Event Hubs trigger is refused: nothing is ingested",
            )
        )
    if spec.llm_log.workspace_resource_id:
        out.append(
            RoleNeed(
                "function",
                who,
                "Log Analytics Reader",
                LOG_ANALYTICS_READER,
                spec.llm_log.workspace_resource_id,
                "the reconcile timer cannot read the language-model log",
            )
        )
    return out


def _operator_roles(spec: Spec) -> list[RoleNeed]:
    """The operators': `reconcile` and `consume`."""
    out: list[RoleNeed] = []
    eh = spec.event_hub
    hub = f"hub {eh.namespace}/{eh.name}"
    if spec.llm_log.workspace_resource_id:
        out.append(
            RoleNeed(
                "operator",
                "the identity that runs `reconcile`",
                "Log Analytics Reader",
                LOG_ANALYTICS_READER,
                spec.llm_log.workspace_resource_id,
                "`reconcile` cannot read the language-model log",
            )
        )
    out.append(
        RoleNeed(
            "operator",
            "the identity that runs `consume` (unless it uses the Listen connection string)",
            "Azure Event Hubs Data Receiver",
            EVENT_HUBS_DATA_RECEIVER,
            hub,
            "`consume` is refused by Event Hubs",
        )
    )
    if spec.consumer.checkpoint_store == "blob" and spec.consumer.blob_account_url:
        out.append(
            RoleNeed(
                "operator",
                "the identity that runs `consume`",
                "Storage Blob Data Contributor",
                STORAGE_BLOB_DATA_CONTRIBUTOR,
                f"{spec.consumer.blob_account_url} container {spec.consumer.blob_container}",
                "`consume` cannot keep its checkpoints",
            )
        )
    return out


def key_vault_of(secret_id: str) -> str:
    """The vault a Key Vault secret identifier points into, as a scope to name:
    ``https://kv-aoai.vault.azure.net/secrets/key`` → ``key vault kv-aoai
    (https://kv-aoai.vault.azure.net)``; a value without a host is returned as it is."""
    host = urlsplit(secret_id).netloc
    if not host:
        return secret_id
    return f"key vault {host.split('.', 1)[0]} (https://{host})"


def render_roles(
    needs: list[RoleNeed], principals: tuple[Principal, ...] | None = None
) -> list[str]:
    """One line per need (of ``principals`` only, when given)."""
    return [n.line() for n in needs if principals is None or n.principal in principals]
