"""Estimate accuracy on real captures (``make bench``): the README's accuracy table.

Reads ``tests/data/captures/pairs.jsonl`` — real request / response pairs with the usage the
API reported, recorded by other projects (``tests/data/captures/SOURCES.md``; rebuilt by
``tests/data/captures/rebuild.py``) — takes the reported usage away and estimates it as
ingestion would (:mod:`aoai_helpers.core.accuracy`). Prints, per shape, how many estimates were
exact, the mean absolute error beside the issue's goal, and how often a claim of "exact" was
wrong; writes ``bench-results/accuracy.json``. ``--show N`` lists the N worst misses per
shape. Exit status 1 when a goal is missed (``--no-fail`` to only report).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "tests" / "data" / "captures" / "pairs.jsonl"

#: The goals of issue 16: (share exact, mean absolute error) per shape; None = no goal.
GOALS: dict[str, tuple[float | None, float | None]] = {
    "text chat": (0.95, 0.02),
    "chat with tools": (0.80, 0.02),
    "chat with response_format": (None, 0.02),
    "responses": (None, 0.05),
    "completions": (None, 0.02),
    "embeddings": (None, 0.02),
    "non-streamed bodies": (None, 0.03),
    "streams": (None, 0.03),
}


def load_pairs(path: Path = PAIRS) -> list[dict[str, Any]]:
    """The pairs of the corpus, one JSON object per line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    from aoai_helpers.core.accuracy import completion_check, prompt_check, score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=0, help="list the N worst misses per shape")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a goal is missed")
    args = parser.parse_args()
    pairs = load_pairs()
    prompts = [c for c in map(prompt_check, pairs) if c is not None]
    completions = [c for c in map(completion_check, pairs) if c is not None]
    missed = []
    rows = []
    print(f"{len(pairs)} real pairs from {PAIRS.relative_to(ROOT)}")
    print(
        f"{'estimated':<44}{'exact':>12}{'mean abs err':>14}{'goal':>16}"
        f"{'exact claims wrong':>20}{'floors broken':>15}"
    )
    for title, checks in (("prompt", prompts), ("completion", completions)):
        for s in score(checks):
            want_exact, want_err = GOALS.get(s.shape, (None, None))
            ok = (want_exact is None or s.exact / s.count >= want_exact) and (
                want_err is None or s.mean_abs_error <= want_err
            )
            goal = " / ".join(
                g
                for g in (
                    f">={want_exact:.0%}" if want_exact is not None else "",
                    f"<={want_err:.0%}" if want_err is not None else "",
                )
                if g
            )
            name = f"{title}: {s.shape}"
            floors = f"{s.above_reported} of {s.count}" if "lower bound" in s.shape else "-"
            print(
                f"{name:<44}{s.exact:>6} / {s.count:<4}{s.mean_abs_error:>13.1%}"
                f"{goal + ('' if ok else ' MISSED'):>16}"
                f"{s.claimed_exact_wrong:>12} of {s.claimed_exact:<4}{floors:>15}"
            )
            rows.append({"what": name, **dataclasses.asdict(s), "goal": goal, "met": ok})
            if not ok:
                missed.append(name)
            if args.show:
                worst = sorted(
                    (c for c in checks if c.shape == s.shape and not c.exact),
                    key=lambda c: -abs(c.estimated - c.reported),
                )
                for c in worst[: args.show]:
                    print(
                        f"    {c.estimated - c.reported:+6d}  {c.estimated}/{c.reported}  {c.pair_id}"
                    )
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if missed and not args.no_fail:
        print("goals missed: " + ", ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
