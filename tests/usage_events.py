"""Small builders shared by the tests that store hand-made v2 events: a ``Usage`` object and a
request body (``HELLO``: 8 prompt tokens on gpt-4o)."""

from __future__ import annotations

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}  # 8 prompt tokens on gpt-4o


def usage(prompt: int, completion: int, cached: int = 0) -> dict[str, int]:
    """The v2 event's ``Usage``: ``prompt`` + ``completion`` tokens, ``cached`` of the prompt."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
        "reasoning_tokens": 0,
    }
