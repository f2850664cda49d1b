"""Tests for aoai_helpers.core.model_names: model-name normalisation."""

from __future__ import annotations

import pytest

from aoai_helpers.core.model_names import KNOWN_MODELS, ModelInfo, normalize_model

O200K = "o200k_base"
CL100K = "cl100k_base"


@pytest.mark.parametrize(
    ("raw", "name", "encoding"),
    [
        ("gpt-4o-2024-11-20", "gpt-4o", O200K),
        ("gpt-4o-2024-08-06", "gpt-4o", O200K),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", O200K),
        ("gpt-35-turbo-16k", "gpt-35-turbo-16k", CL100K),
        ("gpt-35-turbo-0125", "gpt-35-turbo", CL100K),
        ("gpt-35-turbo-16k-0613", "gpt-35-turbo-16k", CL100K),
        ("gpt-3.5-turbo", "gpt-35-turbo", CL100K),
        ("gpt-3.5-turbo-16k", "gpt-35-turbo-16k", CL100K),
        ("gpt-3.5-turbo-instruct-0914", "gpt-35-turbo-instruct", CL100K),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini", O200K),
        ("gpt-4.1-nano", "gpt-4.1-nano", O200K),
        ("gpt-4.1", "gpt-4.1", O200K),
        ("gpt-4.5-preview-2025-02-27", "gpt-4.5-preview", O200K),
        ("o1", "o1", O200K),
        ("o1-2024-12-17", "o1", O200K),
        ("o1-preview-2024-09-12", "o1-preview", O200K),
        ("o3-mini", "o3-mini", O200K),
        ("o3-mini-2025-01-31", "o3-mini", O200K),
        ("o4-mini-2025-04-16", "o4-mini", O200K),
        ("gpt-5-nano", "gpt-5-nano", O200K),
        ("gpt-5-2025-08-07", "gpt-5", O200K),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini", O200K),
        ("gpt-5.1-chat", "gpt-5.1-chat", O200K),
        ("text-embedding-3-large", "text-embedding-3-large", CL100K),
        ("text-embedding-3-small", "text-embedding-3-small", CL100K),
        ("text-embedding-ada-002", "text-embedding-ada-002", CL100K),
        ("gpt-4-0613", "gpt-4", CL100K),
        ("gpt-4-32k-0613", "gpt-4-32k", CL100K),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo", CL100K),
        # GPT-4 Turbo previews are priced as gpt-4-turbo, not as gpt-4.
        ("gpt-4-1106-preview", "gpt-4-turbo", CL100K),
        ("gpt-4-0125-preview", "gpt-4-turbo", CL100K),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview", O200K),
        ("GPT-4o", "gpt-4o", O200K),
        ("  gpt-4o \n", "gpt-4o", O200K),
        ("azure/gpt-4o-2024-11-20", "gpt-4o", O200K),
        ("openai/GPT-3.5-Turbo", "gpt-35-turbo", CL100K),
    ],
)
def test_known_models_normalise(raw: str, name: str, encoding: str) -> None:
    assert normalize_model(raw) == ModelInfo(name=name, encoding=encoding, known=True)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_missing_name_is_unknown(raw: str | None) -> None:
    assert normalize_model(raw) == ModelInfo("unknown", "o200k_base", False)


def test_deployment_name_is_flagged_unknown() -> None:
    assert normalize_model("chat-prod") == ModelInfo("chat-prod", O200K, False)
    assert normalize_model(" Chat-Prod ") == ModelInfo("chat-prod", O200K, False)


def test_unknown_names_keep_family_encoding_and_drop_dates() -> None:
    # Deployment names or fine-tunes that start with a cl100k family use its encoding.
    assert normalize_model("gpt-35-turbo-prod") == ModelInfo("gpt-35-turbo-prod", CL100K, False)
    ft = normalize_model("ft:gpt-35-turbo-0613:acme::abc123")
    assert (ft.encoding, ft.known) == (CL100K, False)
    assert normalize_model("gpt-4o-prod") == ModelInfo("gpt-4o-prod", O200K, False)
    # A future dated model keeps its base name so a rate for it can match.
    assert normalize_model("gpt-6-2027-01-01") == ModelInfo("gpt-6", O200K, False)


def test_size_variants_are_kept() -> None:
    assert normalize_model("gpt-4o-mini").name == "gpt-4o-mini"
    assert normalize_model("gpt-5-nano").name == "gpt-5-nano"
    assert normalize_model("gpt-4-32k").name == "gpt-4-32k"
    assert normalize_model("gpt-35-turbo-16k").name == "gpt-35-turbo-16k"


def test_non_string_input_does_not_raise() -> None:
    bogus: object = 42
    assert normalize_model(bogus).known is False  # type: ignore[arg-type,unused-ignore]


def test_known_models_table_is_consistent() -> None:
    for name, encoding in KNOWN_MODELS.items():
        assert normalize_model(name) == ModelInfo(name, encoding, True)
        assert encoding in (O200K, CL100K)


def test_normalize_model_is_cached() -> None:
    assert normalize_model("gpt-4o-2024-11-20") is normalize_model("gpt-4o-2024-11-20")
