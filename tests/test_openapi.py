"""The bundled OpenAPI document: the metered classic operations, as APIM imports them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aoai_helpers.azure.apim.openapi import (
    METERED_OPERATIONS,
    metered_document,
    metered_document_text,
)
from aoai_helpers.core.routes import Route, classify
from aoai_helpers.local.gateway import OPERATION_IDS
from aoai_helpers.spec import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml")


def test_every_operation_is_one_the_gateway_meters_with_its_operation_id() -> None:
    document = metered_document(SPEC.for_cloud("AzureChinaCloud"))
    assert document["openapi"] == "3.0.1"
    paths = document["paths"]
    assert len(paths) == len(METERED_OPERATIONS) == 3
    classic_ids = {v for (op, v1), v in OPERATION_IDS.items() if not v1 and op != "other"}
    for template, item in paths.items():
        concrete = "/" + SPEC.apim.api_path + re.sub(r"\{deployment-id\}", "gpt-4o", template)
        route = classify("POST", concrete, ())
        assert isinstance(route, Route) and route.operation != "unmetered", concrete
        assert route.deployment == "gpt-4o"
        assert item["post"]["operationId"] == OPERATION_IDS[(route.operation, False)]
        assert item["post"]["operationId"] in classic_ids
        names = {p["name"]: p for p in item["post"]["parameters"]}
        assert names["deployment-id"]["in"] == "path" and names["deployment-id"]["required"]
        assert names["api-version"]["in"] == "query"
        assert set(item) == {"post"}  # no other method is imported
    assert document["servers"][0]["variables"]["endpoint"]["default"].endswith(".openai.azure.cn")


def test_the_text_is_stable_json() -> None:
    text = metered_document_text(SPEC)
    assert text == metered_document_text(SPEC)
    assert json.loads(text) == metered_document(SPEC)
