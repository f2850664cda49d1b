"""Every ARM request ``function deploy`` sends (plan and deploy, through the real azure-mgmt-web
SDK and the dry-run transport), checked against REST-spec excerpts in ``tests/rest_specs/``
(``web-2025-05-01.json``, ``authorization-2022-04-01.json``; each names its source file and
commit in Azure/azure-rest-api-specs).

Per cloud and per app shape (Consumption read through its server farm, Flex Consumption with
settings to remove and identity-based storage, a role-assignment list in pages): each request
must match exactly one excerpted path template and method, at that file's api-version, on the
cloud's ARM host, with no query parameter the operation does not document (a page after the
first may carry what ARM's ``nextLink`` carried); every operation is seen; the app settings PUT
body must be a ``StringDictionary`` (no read-only or unknown property, every setting a string).
The validator helpers are the ones of ``tests/test_arm_conformance.py``. No network.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import test_function_deploy as fd
from test_arm_conformance import _flatten, _template_re, problems

from aoai_helpers.azure.dryrun import DryRunCredential, DryRunTransport, RecordedRequest
from aoai_helpers.azure.functions.deploy import deploy, plan_deploy
from aoai_helpers.azure.functions.identity import STORAGE_BLOB_DATA_OWNER
from aoai_helpers.clouds import CLOUDS, get_cloud

SPECS_DIR = Path(__file__).parent / "rest_specs"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SPECS_DIR / name).read_text("utf-8"))
    return data


WEB = _load("web-2025-05-01.json")
AUTHORIZATION = _load("authorization-2022-04-01.json")
OPERATIONS = [
    {
        **op,
        "id": op_id,
        # `/{scope}` is any ARM id (several segments), as `{resourceUri}` in the ARM test
        "pattern": _template_re(op["template"].replace("/{scope}", "{resourceUri}")),
        "api_version": doc["api_version"],
        "doc": doc,
    }
    for doc in (WEB, AUTHORIZATION)
    for op_id, op in doc["paths"].items()
]


def operation_of(r: RecordedRequest) -> dict[str, Any]:
    """The one excerpted operation whose template and method match ``r``."""
    found = [
        op for op in OPERATIONS if r.method in op["methods"] and op["pattern"].fullmatch(r.path)
    ]
    assert len(found) == 1, (r.method, r.path, [f["id"] for f in found])
    return found[0]


def _dictionary_problems(
    doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str
) -> list[str]:
    """What ``problems`` leaves out: the values of an ``additionalProperties`` dictionary."""
    if not isinstance(value, dict):
        return []
    flat = _flatten(doc, schema)
    out: list[str] = []
    extra = flat.get("additionalProperties")
    if isinstance(extra, dict):
        for key, item in value.items():
            out += problems(doc, extra, item, f"{at}.{key}")
    for name, sub in flat["properties"].items():
        if name in value:
            out += _dictionary_problems(doc, sub, value[name], f"{at}.{name}")
    return out


def body_problems(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    """``problems`` of the ARM test (read-only, unknown, required, types…), plus the type of
    each value of a dictionary such as ``StringDictionary.properties``."""
    return problems(doc, schema, value) + _dictionary_problems(doc, schema, value, "")


# ----------------------------------------------------------------------------- the dry runs


class PagedRoleAssignments(DryRunTransport):
    """The in-memory ARM, listing role assignments in two pages (ARM's ``nextLink``)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = request.url
        if "/providers/Microsoft.Authorization/roleAssignments" in url and "skipToken" not in url:
            from aoai_helpers.azure.dryrun import memory_response

            self.requests.append(RecordedRequest(request.method, url, None, {}))
            base = url.split("?", 1)[0]
            link = f"{base}?api-version=2022-04-01&$filter=principalId%20eq%20'x'&$skipToken=p1"
            return memory_response(request, 200, {"value": [], "nextLink": link})
        return super().send(request, **kwargs)


def _consumption_via_farm() -> tuple[dict[str, Any], DryRunTransport]:
    site = fd.linux_consumption_site()
    del site["properties"]["sku"]
    transport = DryRunTransport()
    transport.store[fd.FARM.lower()] = {"id": fd.FARM, "sku": {"name": "Y1", "tier": "Dynamic"}}
    return site, transport


def _flex_with_storage() -> tuple[dict[str, Any], DryRunTransport]:
    site = fd._flex_with_deployment_storage({"type": "SystemAssignedIdentity"})
    transport = DryRunTransport()
    fd._grant(transport, fd.HOST_ACCOUNT, STORAGE_BLOB_DATA_OWNER, listed_at=fd.SUBSCRIPTION)
    return site, transport


SHAPES = {
    "consumption-via-server-farm": (_consumption_via_farm, {"MY_OWN_SETTING": "keep me"}),
    "flex-removals-and-storage": (
        _flex_with_storage,
        {
            **fd.SETTINGS_OF_OTHERS,
            "AzureWebJobsStorage": "",
            "AzureWebJobsStorage__accountName": "sthost",
        },
    ),
    "paged-role-assignments": (
        lambda: (fd.linux_consumption_site(), PagedRoleAssignments()),
        {"AOAI_EVENTHUB_NAME": "old-hub"},
    ),
}
CASES = [(shape, cloud) for shape in SHAPES for cloud in CLOUDS]


@pytest.fixture(scope="module")
def scm() -> Iterator[str]:
    """A loopback SCM endpoint that accepts any upload and reports success at once."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path.startswith("/api/publish"):
                self._send(202, b'"d1"')
            else:
                self._send(202, b"{}", f"http://{self.headers['Host']}/api/deployments/latest")

        def do_GET(self) -> None:
            self._send(200, json.dumps({"id": "d1", "complete": True, "status": 4}).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def recorded(
    scm: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], list[RecordedRequest]]:
    package = tmp_path_factory.mktemp("pkg") / "aoai-ingest.zip"
    import zipfile

    with zipfile.ZipFile(package, "w") as z:
        z.writestr("function_app.py", "# test package\n")
    out = {}
    for shape, cloud in CASES:
        make, existing = SHAPES[shape]
        site, transport = make()
        clients, transport = fd._clients(
            cloud, existing=dict(existing), site=site, transport=transport
        )
        the_plan = plan_deploy(
            fd.SPEC, clients=clients, db_url=fd.DB, zip_path=package, cloud=cloud
        )
        assert not the_plan.problems, the_plan.problems
        deploy(the_plan, clients, credential=DryRunCredential(), scm=scm, poll_interval=0)
        out[(shape, cloud)] = list(transport.requests)
    return out


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_every_request_is_an_excerpted_operation_at_its_api_version(
    shape: str, cloud: str, recorded: dict[tuple[str, str], list[RecordedRequest]]
) -> None:
    requests = recorded[(shape, cloud)]
    host = get_cloud(cloud).arm_endpoint.removeprefix("https://").rstrip("/")
    seen = set()
    for r in requests:
        op = operation_of(r)
        seen.add(op["id"])
        assert r.api_version == op["api_version"], (op["id"], r.api_version)
        assert r.host == host, (op["id"], r.host)
        allowed = {"api-version", *op["query"]}
        if "$skipToken" in r.query:  # a page after the first: what ARM's nextLink carried
            allowed |= set(op.get("paging_query", []))
        assert set(r.query) <= allowed, (op["id"], set(r.query) - allowed)
        if op["id"] == "RoleAssignments_ListForScope":
            (expression,) = r.query["$filter"]
            assert re.fullmatch(r"principalId eq '[^']+'", expression), expression
    expected = {
        "WebApps_Get",
        "WebApps_ListApplicationSettings",
        "WebApps_UpdateApplicationSettings",
        "WebApps_ListFunctions",
        "RoleAssignments_ListForScope",
    }
    if shape == "consumption-via-server-farm":
        expected.add("AppServicePlans_Get")
    assert seen == expected


def test_all_excerpted_operations_are_exercised(
    recorded: dict[tuple[str, str], list[RecordedRequest]],
) -> None:
    seen = {operation_of(r)["id"] for requests in recorded.values() for r in requests}
    assert seen == {op["id"] for op in OPERATIONS}
    pages = [r for rs in recorded.values() for r in rs if "$skipToken" in r.query]
    assert pages, "the paged shape must follow a nextLink"
    subscription_lists = [
        r
        for (shape, _), rs in recorded.items()
        if shape == "flex-removals-and-storage"
        for r in rs
        if re.fullmatch(
            r"/subscriptions/[^/]+/providers/Microsoft\.Authorization/roleAssignments", r.path
        )
    ]
    assert subscription_lists, "the storage roles are looked up at the subscription"


@pytest.mark.parametrize(("shape", "cloud"), CASES)
def test_the_app_settings_put_is_a_string_dictionary(
    shape: str, cloud: str, recorded: dict[tuple[str, str], list[RecordedRequest]]
) -> None:
    puts = [r for r in recorded[(shape, cloud)] if r.method == "PUT"]
    assert len(puts) == 1
    op = operation_of(puts[0])
    assert op["id"] == "WebApps_UpdateApplicationSettings"
    doc = op["doc"]
    assert body_problems(doc, doc["definitions"][op["body"]], puts[0].body) == []
    settings = puts[0].body["properties"]
    assert settings["AOAI_DB_URL"] == fd.DB  # the whole StringDictionary: ours and the app's
    if shape == "flex-removals-and-storage":
        assert "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING" not in settings
        assert settings["AzureWebJobsStorage__accountName"] == "sthost"


def test_the_validator_catches_what_the_excerpts_forbid() -> None:
    """The checks above can fail."""
    schema = WEB["definitions"]["StringDictionary"]
    assert body_problems(WEB, schema, {"properties": {"A": "1"}}) == []
    found = "\n".join(
        body_problems(
            WEB,
            schema,
            {"id": "/x", "location": "y", "properties": {"A": 1, "B": True, "C": "ok"}},
        )
    )
    for expected in (
        ".id: read-only, must not be sent",
        ".location: not a property of the definition",
        ".properties.A: 1 is not a string",
        ".properties.B: True is not a string",
    ):
        assert expected in found, expected
    assert "is not a object" in "\n".join(body_problems(WEB, schema, {"properties": ["A"]}))
    sub = "/subscriptions/00000000-0000-0000-0000-000000000000"
    rg = f"{sub}/resourceGroups/rg/providers/Microsoft.Web"
    for method, path in (
        ("GET", f"{rg}/sites/app/config/appsettings"),  # appsettings is PUT only (list is POST)
        ("PUT", f"{rg}/sites/app/config/appsettings/list"),
        ("GET", f"{rg}/sites/app/slots/s/functions"),  # a slot's functions: not excerpted
        ("GET", f"{sub}/providers/Microsoft.Authorization/roleAssignments/abc"),  # one assignment
    ):
        with pytest.raises(AssertionError):
            operation_of(
                RecordedRequest(method, f"https://management.azure.com{path}?api-version=x", None)
            )
    # the {scope} form matches a scope of any depth, and only the list
    deep = f"{rg}/sites/app/providers/Microsoft.Authorization/roleAssignments"
    assert operation_of(RecordedRequest("GET", f"https://h{deep}", None))["id"] == (
        "RoleAssignments_ListForScope"
    )


def test_the_excerpts_name_their_source() -> None:
    for doc in (WEB, AUTHORIZATION):
        src = doc["source"]
        assert src["repo"] == "Azure/azure-rest-api-specs" and src["files"]
        for f in src["files"]:
            assert re.fullmatch(r"[0-9a-f]{40}", f["commit"]), f
            assert f["path"].startswith("specification/") and f["path"].endswith(".json")
            assert f"/stable/{doc['api_version']}/" in f["path"]
        named = {op for f in src["files"] for op in f.get("operations", [])}
        assert named == set(doc["paths"])
    defined = {d for f in WEB["source"]["files"] for d in f.get("definitions", [])}
    assert defined == set(WEB["definitions"])
