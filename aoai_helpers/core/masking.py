"""Showing a secret in output: its last four characters at most, never the rest (STYLE §12)."""

from __future__ import annotations

__all__ = ["mask"]


def mask(value: object) -> str:
    """``****`` + the last four characters of a secret of 12 or more characters, else ``****``.

    Placeholders are not secrets and are shown as they are: ``<…>`` (a value the plan does not
    know yet) and ``{{…}}`` (an APIM named-value reference).
    """
    text = str(value)
    if text.startswith(("<", "{{")):
        return text
    return "****" + text[-4:] if len(text) >= 12 else "****"
