"""The deployment spec: the sample loads, mistakes become one readable ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoai_helpers.config import spec_path
from aoai_helpers.exceptions import ConfigError, InputError
from aoai_helpers.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateway.yaml"
BUNDLED = ROOT / "aoai_helpers" / "data" / "gateway.yaml"


def _sample() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text("utf-8"))
    return data


def test_the_example_spec_loads_and_is_the_bundled_one() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.cloud == "AzureCloud"
    assert spec.deployment_models()["gpt-4o"] == "gpt-4o-2024-11-20"
    assert [s.business_unit for s in spec.subscriptions] == ["Finance", "Marketing", "R&D"]
    assert spec.subscriptions[2].token_limit is not None
    assert spec.subscriptions[2].token_limit.token_quota_period == "Monthly"
    assert EXAMPLE.read_bytes() == BUNDLED.read_bytes(), (
        "copy examples/gateway.yaml to aoai_helpers/data/"
    )


def test_backend_lookup_is_case_insensitive() -> None:
    spec = load_spec(EXAMPLE)
    backend = spec.backend_for("GPT-4O")
    assert backend is not None and backend.name == "aoai-weu"
    assert spec.backend_for("no-such-deployment") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
        (lambda d: d.update(cloud="AzureGermanCloud"), "cloud: Input should be"),
        (
            lambda d: d["subscriptions"].append(dict(d["subscriptions"][0])),
            "duplicate subscriptions: bu-finance",
        ),
        (
            lambda d: d["backends"][0].update(endpoint="aoai-weu.openai.azure.com"),
            "backends.0.endpoint",
        ),
        (lambda d: d["subscriptions"][0].update(id="bad id!"), "subscriptions.0.id"),
        (
            lambda d: d["subscriptions"][0].update(token_limit={"token_quota": 5}),
            "token_quota and token_quota_period go together",
        ),
        (lambda d: d["capture"].update(streaming="sometimes"), "capture.streaming"),
        (lambda d: d.pop("event_hub"), "event_hub: Field required"),
        (lambda d: d["backends"][0].update(deployments={}), "backends.0.deployments"),
        (
            lambda d: d["apim"].update(sku="Consumption"),
            "llm-token-limit cannot be saved on the Consumption tier",
        ),
        (lambda d: d["apim"].update(sku="Gold"), "apim.sku"),
        (
            lambda d: d["event_hub"].update(tier="Standard", retention_days=8),
            "event_hub.retention_days 8 exceeds the Standard tier's maximum of 7 days",
        ),
        (
            lambda d: d["event_hub"].update(tier="Basic", retention_days=2),
            "exceeds the Basic tier's maximum of 1 day ",
        ),
        (lambda d: d.update(aoai={"audience": "cognitiveservices.azure.cn"}), "aoai.audience"),
        (lambda d: d.update(aoai={"endpoint_suffix": "https://x"}), "aoai.endpoint_suffix"),
    ],
)
def test_mistakes_are_named(change: Any, message: str) -> None:
    data = copy.deepcopy(_sample())
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_spec(data, "gateway.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("gateway.yaml is invalid: ")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cloud: [unclosed\n", "utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 2\)"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n", "utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_spec(scalar)


def test_spec_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert spec_path(None, env={}) == BUNDLED
    (tmp_path / "gateway.yaml").write_text("x: 1\n", "utf-8")
    assert spec_path(None, env={}) == Path("gateway.yaml")
    assert spec_path(None, env={"AOAI_SPEC": "/x/y.yaml"}) == Path("/x/y.yaml")
    assert spec_path("mine.yaml", env={"AOAI_SPEC": "/x/y.yaml"}) == Path("mine.yaml")


def test_with_simulator_replaces_only_the_simulator_fields() -> None:
    spec = load_spec(EXAMPLE)
    slow = spec.with_simulator(ttft_ms=250.0, tokens_per_second=50.0)
    assert (slow.local.simulator.ttft_ms, slow.local.simulator.tokens_per_second) == (250.0, 50.0)
    assert slow.local.simulator.max_reply_tokens == spec.local.simulator.max_reply_tokens
    assert slow.model_dump(exclude={"local"}) == spec.model_dump(exclude={"local"})
    assert spec.local.simulator.ttft_ms == 0  # the original is untouched


def test_tiers_that_fit_are_accepted() -> None:
    data = copy.deepcopy(_sample())
    data["apim"]["sku"] = "StandardV2"
    data["event_hub"].update(tier="Premium", retention_days=90)
    spec = parse_spec(data)
    assert spec.owners_logged() and spec.event_hub.retention_days == 90
    for sub in data["subscriptions"]:
        sub.pop("token_limit", None)
    data["apim"]["sku"] = "Consumption"
    consumption = parse_spec(data)
    assert not consumption.owners_logged()  # no users on Consumption: context.User is null
    assert parse_spec(_sample()).owners_logged()  # tier unknown offline: logged
    assert not parse_spec(_sample()).owners_logged("Consumption")  # the live tier decides


def test_aoai_endpoints_default_to_the_cloud_and_can_be_set() -> None:
    spec = parse_spec(_sample())
    assert (spec.aoai_suffix(), spec.aoai_audience()) == (
        "openai.azure.com",
        "https://cognitiveservices.azure.com",
    )
    china = spec.for_cloud("AzureChinaCloud")
    assert (china.aoai_suffix(), china.aoai_audience()) == (
        "openai.azure.cn",
        "https://cognitiveservices.azure.cn",
    )
    gov = spec.for_cloud("AzureUSGovernment")
    assert gov.aoai_suffix() == "openai.azure.us"
    data = copy.deepcopy(_sample())
    data["aoai"] = {"endpoint_suffix": "openai.example.cn", "audience": "https://cog.example.cn/"}
    mine = parse_spec(data).for_cloud("AzureChinaCloud")
    assert (mine.aoai_suffix(), mine.aoai_audience()) == (
        "openai.example.cn",
        "https://cog.example.cn",
    )
