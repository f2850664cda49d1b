"""The one function that shows secrets in output."""

from __future__ import annotations

from aoai_helpers.core.masking import mask


def test_long_secrets_show_their_last_four_characters_only() -> None:
    assert mask("0123456789abcdef0123456789abcdef") == "****cdef"
    assert mask("abcdefghijkl") == "****ijkl"


def test_short_secrets_show_nothing() -> None:
    assert mask("abcdefghijk") == "****"
    assert mask("") == "****"


def test_placeholders_are_not_secrets() -> None:
    assert (
        mask("<not set: $AOAI_EVENTHUB_SEND_CONNECTION>")
        == "<not set: $AOAI_EVENTHUB_SEND_CONNECTION>"
    )
    assert mask("{{Logger-Credentials--abc}}") == "{{Logger-Credentials--abc}}"
