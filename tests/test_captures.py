"""The usage path on real captures of other projects (``tests/data/captures``).

Every pair is a real request and the response the API sent for it, recorded by another project
(``SOURCES.md`` and ``sources/*.md`` name each file's repository, path and commit), never
output of this project's simulator. ``pairs.jsonl`` is rebuilt from the stored cassettes by
``rebuild.py``; no capture is edited.

- Where the API reported usage, v1 and v2 events resolve to exactly that usage.
- Where it must be estimated (usage taken away), no estimate that claims ``exact`` is wrong,
  reasoning models' outputs are flagged lower bounds, and the accuracy per shape never falls
  below what ``benchmarks/accuracy.py`` measured when the rules were fitted (the README table).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_usage import v1_event, v2_event

from aoai_helpers.core.accuracy import completion_check, prompt_check, score
from aoai_helpers.core.events import Usage, UsageEvent
from aoai_helpers.core.usage import resolve_usage

CAPTURES = Path(__file__).parent / "data" / "captures"
PAIRS = [
    json.loads(line)
    for line in (CAPTURES / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
OPERATION_IDS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "embeddings_create",
    "responses": "responses_create",
}

#: Floors per shape (exact share, mean absolute error) as measured on this corpus when the
#: counting rules were fitted (benchmarks/accuracy.py prints them beside the issue's goals).
FLOORS: dict[str, tuple[float, float]] = {
    "prompt: text chat": (0.95, 0.01),
    "prompt: chat with tools": (0.65, 0.011),
    "prompt: responses": (0.70, 0.05),
    "prompt: completions": (1.0, 0.0),
    "completion: non-streamed bodies": (0.80, 0.015),
    "completion: streams": (0.90, 0.01),
}


def _rebuild_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("captures_rebuild", CAPTURES / "rebuild.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reported(pair: dict[str, Any]) -> Usage:
    u = pair["usage"]
    return Usage(
        u["prompt_tokens"],
        u["completion_tokens"] or 0,
        u["total_tokens"] or u["prompt_tokens"] + (u["completion_tokens"] or 0),
        u["cached_tokens"] or 0,
        u["reasoning_tokens"] or 0,
    )


def _v2(pair: dict[str, Any]) -> UsageEvent:
    return v2_event(
        OperationId=OPERATION_IDS[pair["operation"]],
        Operation=pair["operation"],
        IsStreaming=bool(pair["stream"]),
        Request=pair["request"],
        ResponseString=pair["response_body"],
    )


def _v1(pair: dict[str, Any]) -> UsageEvent:
    return v1_event(pair["request"], pair["response_body"], OPERATION_IDS[pair["operation"]])


def test_the_corpus_is_what_rebuild_makes_of_the_stored_captures() -> None:
    """pairs.jsonl is rebuilt from raw/, byte for byte; every stored file names its source."""
    rebuild = _rebuild_module()
    pairs_text, _summary = rebuild.build()
    assert pairs_text == (CAPTURES / "pairs.jsonl").read_text(encoding="utf-8")
    sources = rebuild.load_sources()
    stored = {p.relative_to(CAPTURES / "raw").as_posix() for p in (CAPTURES / "raw").rglob("*")}
    files = {s for s in stored if (CAPTURES / "raw" / s).is_file()}
    assert files <= set(sources), sorted(files - set(sources))
    assert all(sources[f]["repo"] and sources[f]["path"] for f in files)
    assert len(PAIRS) >= 40


@pytest.mark.parametrize("make", [_v2, _v1], ids=["v2", "v1"])
def test_reported_usage_is_billed_exactly_through_v1_and_v2_events(make: Any) -> None:
    wrong = []
    for pair in PAIRS:
        resolved = resolve_usage(make(pair))
        if (resolved.source, resolved.usage) != ("reported", _reported(pair)):
            wrong.append((pair["id"], resolved.source, resolved.usage))
    assert wrong == []


def test_no_estimate_that_claims_exact_is_wrong() -> None:
    """The EstimateQuality 'exact' is a promise: on real captures it is never broken."""
    broken = [
        (c.pair_id, c.estimated, c.reported)
        for c in map(prompt_check, PAIRS)
        if c is not None and c.quality == "exact" and not c.exact
    ]
    assert broken == []


def test_lower_bounds_are_never_above_what_was_billed() -> None:
    checks = [c for c in map(completion_check, PAIRS) if c is not None]
    checks += [c for c in map(prompt_check, PAIRS) if c is not None]
    for shape in (
        "hidden output (lower bound)",  # reasoning models, filtered output, built-in tools
        "constrained output (lower bound)",  # strict schemas, tool_choice required
        "opaque input (lower bound)",  # encrypted items, stored state, the launch weeks
    ):
        bounds = [c for c in checks if c.shape == shape]
        assert bounds, f"the corpus holds {shape}"
        assert {c.quality for c in bounds} == {"lower_bound"}
        # what can be seen never exceeds what was billed: a floor indeed
        assert [c.pair_id for c in bounds if c.estimated > c.reported] == [], shape


def test_accuracy_per_shape_stays_at_or_above_what_was_measured() -> None:
    checks = [c for c in map(prompt_check, PAIRS) if c is not None]
    scores = {f"prompt: {s.shape}": s for s in score(checks)}
    checks = [c for c in map(completion_check, PAIRS) if c is not None]
    scores |= {f"completion: {s.shape}": s for s in score(checks)}
    below = {
        name: (scores[name].exact / scores[name].count, scores[name].mean_abs_error)
        for name, (share, error) in FLOORS.items()
        if scores[name].exact / scores[name].count < share or scores[name].mean_abs_error > error
    }
    assert below == {}
