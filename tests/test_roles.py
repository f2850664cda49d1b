"""Every role each identity needs follows from the spec's options, with the built-in role ids."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from aoai_helpers.azure.roles import (
    COGNITIVE_SERVICES_OPENAI_USER,
    EVENT_HUBS_DATA_RECEIVER,
    EVENT_HUBS_DATA_SENDER,
    KEY_VAULT_SECRETS_USER,
    LOG_ANALYTICS_READER,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
    key_vault_of,
    render_roles,
    required_roles,
)
from aoai_helpers.spec import parse_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml"


def _sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    return data


def _needs(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(n.principal, n.role_id) for n in required_roles(parse_spec(data))}


def test_managed_identities_everywhere_need_every_role() -> None:
    needs = _needs(_sample())
    assert ("apim", COGNITIVE_SERVICES_OPENAI_USER) in needs
    assert ("apim", EVENT_HUBS_DATA_SENDER) in needs
    assert ("function", EVENT_HUBS_DATA_RECEIVER) in needs  # the trigger's identity
    assert ("function", LOG_ANALYTICS_READER) in needs  # the reconcile timer
    assert ("operator", LOG_ANALYTICS_READER) in needs  # the reconcile CLI
    assert ("operator", EVENT_HUBS_DATA_RECEIVER) in needs


def test_keys_and_connection_strings_need_no_role_for_that_link() -> None:
    data = copy.deepcopy(_sample())
    for backend in data["backends"]:
        backend["auth"] = "key"
    data["event_hub"]["auth"] = "connection_string"
    data["function"]["eventhub_auth"] = "connection_string"
    data["llm_log"].pop("workspace_resource_id")
    needs = _needs(data)
    assert not {r for p, r in needs if p in ("apim", "function")}
    assert needs == {("operator", EVENT_HUBS_DATA_RECEIVER)}


def test_blob_checkpoints_need_blob_access_and_identities_are_named() -> None:
    data = copy.deepcopy(_sample())
    data["consumer"] = {
        "checkpoint_store": "blob",
        "blob_account_url": "https://stckpt.blob.core.windows.net",
    }
    data["function"]["identity_client_id"] = "0f0f0f0f-1111-2222-3333-444444444444"
    data["event_hub"]["identity_client_id"] = "aaaaaaaa-1111-2222-3333-444444444444"
    spec = parse_spec(data)
    assert ("operator", STORAGE_BLOB_DATA_CONTRIBUTOR) in _needs(data)
    lines = render_roles(required_roles(spec), ("function",))
    assert lines and all("user-assigned identity 0f0f0f0f-1111" in line for line in lines)
    sender = [n for n in required_roles(spec) if n.role_id == EVENT_HUBS_DATA_SENDER]
    assert (
        sender[0].identity == "APIM's user-assigned identity aaaaaaaa-1111-2222-3333-444444444444"
    )
    assert sender[0].scope == "hub evhns-aoai-usage/aoai-usage"


def test_a_key_vault_backend_key_needs_secrets_user_on_its_vault() -> None:
    data = copy.deepcopy(_sample())
    first = data["backends"][0]
    kv = "https://kv-aoai.vault.azure.net/secrets/aoai-key"
    deployments = [{"d1": "gpt-4o"}, {"d2": "gpt-4o"}, {"d3": "gpt-4o"}]  # unique per backend
    data["backends"] = [
        {**first, "name": "a", "auth": "key", "key_vault_secret_id": kv},
        {
            **first,
            "name": "b",
            "auth": "key",
            "key_vault_secret_id": kv + "/v2",
            "key_named_value": "k2",
        },
        {
            **first,
            "name": "c",
            "auth": "key",
            "key_named_value": "k3",
        },  # key from the env: no vault
    ]
    for backend, names in zip(data["backends"], deployments, strict=True):
        backend["deployments"] = names
    needs = [n for n in required_roles(parse_spec(data)) if n.role_id == KEY_VAULT_SECRETS_USER]
    assert len(needs) == 1  # one vault, one grant, naming both backends
    (need,) = needs
    assert need.principal == "apim" and need.identity == "APIM's system-assigned identity"
    assert need.role == "Key Vault Secrets User"
    assert need.scope == "key vault kv-aoai (https://kv-aoai.vault.azure.net)"
    assert "backend a, b" in need.why
    assert KEY_VAULT_SECRETS_USER == "4633458b-17de-408a-b874-0445c86b69e6"
    # managed identity to the backend, or a key from the environment: no vault role
    data["backends"] = [{**first, "auth": "managed_identity", "key_vault_secret_id": kv}]
    assert ("apim", KEY_VAULT_SECRETS_USER) not in _needs(data)
    assert key_vault_of("not-a-url") == "not-a-url"
