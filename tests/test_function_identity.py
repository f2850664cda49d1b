"""The function app's identity and the role assignments ARM shows (functions/identity.py).

The list shape is *Role Assignments - List For Scope* (api-version 2022-04-01,
https://learn.microsoft.com/rest/api/authorization/role-assignments/list-for-scope; spec
``specification/authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/``,
example ``RoleAssignments_ListForScope.json``): ``{"value": [{"properties": {"roleDefinitionId":
"/subscriptions/…/providers/Microsoft.Authorization/roleDefinitions/<guid>", "principalId": …,
"scope": …}}]}``; "Use $filter=principalId eq {id} to return all role assignments at, above or
below the scope for the specified principal."
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aoai_helpers.azure.functions.identity import (
    assignment_applies,
    check_role,
    hub_scope,
    need_scope,
    site_principal,
)
from aoai_helpers.azure.roles import (
    EVENT_HUBS_DATA_OWNER,
    EVENT_HUBS_DATA_RECEIVER,
    LOG_ANALYTICS_READER,
    required_roles,
)
from aoai_helpers.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(ROOT / "examples" / "gateway.yaml")
SUB = "00000000-0000-0000-0000-000000000000"
PID = "11111111-aaaa-4bbb-8ccc-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-aoai-gateway"
NS = f"{RG}/providers/Microsoft.EventHub/namespaces/evhns-aoai-usage"
HUB = f"{NS}/eventhubs/aoai-usage"


def _receiver_need() -> Any:
    return next(
        n
        for n in required_roles(SPEC)
        if n.principal == "function" and n.role_id == EVENT_HUBS_DATA_RECEIVER
    )


def _assignment(role: str, scope: str, principal: str = PID) -> dict[str, Any]:
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/ra1",
        "properties": {
            "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            "principalId": principal,
            "scope": scope,
        },
    }


class FakeArm:
    def __init__(self, status: int, items: list[dict[str, Any]]) -> None:
        self.status, self.items = status, items
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, path: str, params: Mapping[str, str]) -> tuple[int, Any]:
        self.calls.append((path, dict(params)))
        return self.status, {"value": self.items} if self.status == 200 else {"error": {}}


def test_the_system_assigned_identity_and_a_user_assigned_one_by_client_id() -> None:
    site = {"identity": {"type": "SystemAssigned", "principalId": PID, "tenantId": "t"}}
    assert site_principal(site, None)[0] == PID
    missing, why = site_principal({"identity": {"type": "None"}}, None)
    assert missing is None and "no system-assigned identity" in why
    uai = {
        "identity": {
            "type": "SystemAssigned, UserAssigned",
            "principalId": "sys",
            "userAssignedIdentities": {
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1": {
                    "clientId": "CID-1",
                    "principalId": "uai-principal",
                }
            },
        }
    }
    assert site_principal(uai, "cid-1")[0] == "uai-principal"  # the client id, any case
    none, why = site_principal(uai, "other-client")
    assert none is None and "other-client" in why and "not attached" in why


def test_the_hub_scope_follows_the_event_hub_resource_group() -> None:
    assert hub_scope(SPEC, SUB) == HUB
    data = SPEC.model_dump()
    data["event_hub"]["resource_group"] = "rg-messaging"
    other = parse_spec(data)
    assert hub_scope(other, SUB).startswith(f"/subscriptions/{SUB}/resourceGroups/rg-messaging/")
    assert need_scope(SPEC, SUB, _receiver_need()) == HUB
    assert need_scope(SPEC, "", _receiver_need()) is None  # no subscription: nothing to query
    reader = next(n for n in required_roles(SPEC) if n.role_id == LOG_ANALYTICS_READER)
    assert need_scope(SPEC, SUB, reader) == SPEC.llm_log.workspace_resource_id


def test_an_assignment_at_or_above_the_hub_counts_and_one_below_or_for_others_does_not() -> None:
    need = _receiver_need()
    for scope in (HUB, NS, RG, f"/subscriptions/{SUB}"):
        arm = FakeArm(200, [_assignment(EVENT_HUBS_DATA_RECEIVER, scope)])
        check = check_role(need, HUB, PID, arm)
        assert check.state == "seen", scope
    ((path, params),) = arm.calls
    assert path == f"{HUB}/providers/Microsoft.Authorization/roleAssignments"
    assert params == {"api-version": "2022-04-01", "$filter": f"principalId eq '{PID}'"}
    owner = check_role(need, HUB, PID, FakeArm(200, [_assignment(EVENT_HUBS_DATA_OWNER, NS)]))
    assert owner.state == "seen"  # the trigger takes Data Receiver or Data Owner
    for items in (
        [_assignment(EVENT_HUBS_DATA_RECEIVER, HUB, principal="someone-else")],
        [_assignment(LOG_ANALYTICS_READER, HUB)],
        [_assignment(EVENT_HUBS_DATA_RECEIVER, f"{NS}/eventhubs/other-hub")],
        [],
    ):
        check = check_role(need, HUB, PID, FakeArm(200, items))
        assert check.state == "not_seen", items
        assert check.command == (
            f"az role assignment create --assignee-object-id {PID} --assignee-principal-type "
            f"ServicePrincipal --role {EVENT_HUBS_DATA_RECEIVER} --scope {HUB}"
        )
    assert assignment_applies(NS, HUB) and not assignment_applies(f"{HUB}/consumergroups/x", HUB)


def test_a_refused_read_is_unknown_not_missing() -> None:
    check = check_role(_receiver_need(), HUB, PID, FakeArm(403, []))
    assert (
        check.state == "unknown"
        and "HTTP 403" in check.detail
        and "could not check" in check.detail
    )
    no_scope = check_role(_receiver_need(), None, PID, FakeArm(200, []))
    assert no_scope.state == "unknown" and "<ARM id of hub" in no_scope.command
