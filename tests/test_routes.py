"""The gateway's classifier (aoai_helpers.core.routes): canonical paths of metered operations only."""

from __future__ import annotations

import pytest

from aoai_helpers.core.routes import Refusal, Route, canonical, classify

SERVED = [
    ("/openai/deployments/gpt-4o/chat/completions", Route("chat", False, "gpt-4o")),
    ("/openai/deployments/gpt-4.1-mini/completions", Route("completions", False, "gpt-4.1-mini")),
    (
        "/openai/deployments/text-embedding-3-small/embeddings",
        Route("embeddings", False, "text-embedding-3-small"),
    ),
    ("/openai/responses", Route("responses", False, None)),
    ("/openai/v1/chat/completions", Route("chat", True, None)),
    ("/openai/v1/completions", Route("completions", True, None)),
    ("/openai/v1/embeddings", Route("embeddings", True, None)),
    ("/openai/v1/responses", Route("responses", True, None)),
]


@pytest.mark.parametrize(("path", "route"), SERVED)
def test_metered_operations_are_served_as_what_they_are(path: str, route: Route) -> None:
    assert classify("POST", path) == route
    assert classify("GET", path) == Refusal(404, "Resource not found")


@pytest.mark.parametrize(
    "path",
    [
        "/openai/deployments/gpt-4o/chat/completions/.",
        "/openai/deployments/gpt-4o/chat/completions/x/..",
        "/openai/v1/chat/completions%23x",
        "/openai/deployments/gpt-4o-mini/../gpt-4.1/chat/completions",
        "/openai/../internal/keys",
        "/openai/deployments/gpt-4o/chat/%2e%2e/completions",
        "/openai/deployments/gpt-4o%2Fchat/completions",
        "/openai//deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions/",
        "/openai/deployments/.hidden/chat/completions",
        "/openai/deployments/gpt-4o/chat\\completions",
        "/openai/deployments/gpt 4o/chat/completions",
        "openai/v1/chat/completions",
        "",
    ],
)
def test_paths_that_are_not_canonical_are_refused(path: str) -> None:
    refused = classify("POST", path)
    assert isinstance(refused, Refusal) and refused.status == 400 and not canonical(path)


@pytest.mark.parametrize(
    "path",
    [
        "/internal/keys",
        "/openai/deployments/gpt-4o/extensions/chat/completions",
        "/openai/v1/models",
        "/openai/deployments/a/b/chat/completions",
        "/openai/v1/responses/resp_1/cancel",
    ],
)
def test_other_paths_are_not_operations(path: str) -> None:
    assert classify("POST", path) == Refusal(404, "Resource not found")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/openai/deployments/gpt-4o/images/generations", "images"),
        ("/openai/v1/images/edits", "images"),
        ("/openai/deployments/whisper/audio/transcriptions", "audio"),
        ("/openai/v1/audio/speech", "audio"),
        ("/openai/files", "files"),
        ("/openai/v1/files/file-1/content", "files"),
        ("/openai/batches", "batches"),
        ("/openai/v1/fine_tuning/jobs", "fine_tuning"),
        ("/openai/assistants", "assistants"),
        ("/openai/v1/threads/t1/runs", "assistants"),
        ("/openai/vector_stores", "vector_stores"),
        ("/openai/v1/realtime", "realtime"),
        ("/openai/deployments/gpt-4o/realtime", "realtime"),
    ],
)
def test_unmetered_operations_are_refused_unless_allowed(path: str, name: str) -> None:
    refused = classify("POST", path)
    assert isinstance(refused, Refusal) and refused.status == 403 and f"'{name}'" in refused.message
    allowed = classify("POST", path, frozenset({name}))
    assert (
        isinstance(allowed, Route)
        and allowed.operation == "unmetered"
        and allowed.unmetered == name
    )
