"""Streamed calls made by hand, where the ``openai`` SDK cannot be made to misbehave."""

from __future__ import annotations

import httpx

__all__ = ["hang_up_at_first_token"]

CHAT_PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def hang_up_at_first_token(gateway_url: str, key: str, prompt: str = "tell me a story") -> None:
    """Start a streamed chat through the gateway with ``key`` and go away at the first token."""
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True}
    with (
        httpx.Client() as client,
        client.stream("POST", gateway_url + CHAT_PATH, json=body, headers={"api-key": key}) as r,
    ):
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                return  # the first token: hang up
