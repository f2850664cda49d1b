"""Published test vectors shared by several test modules.

From the OpenAI cookbook notebook "How to count tokens with tiktoken"
(openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb), whose counts were
verified against the API's reported ``prompt_tokens``.
"""

from __future__ import annotations

# Cookbook "example_messages": 129 prompt tokens on gpt-3.5-turbo / gpt-4, 124 on gpt-4o.
EXAMPLE_MESSAGES: list[dict[str, str]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
