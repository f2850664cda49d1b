"""aoai_helpers.core.terminal.safe: user-controlled text made safe to print on a terminal."""

from __future__ import annotations

import pytest

from aoai_helpers.core.terminal import UNSAFE, safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Finance", "Finance"),
        ("R&D: AI/ML — Zürich 研究", "R&D: AI/ML — Zürich 研究"),  # printable Unicode stays
        ("back\\slash", "back\\slash"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]8;;http://evil\x07link\x1b]8;;\x07", "\\x1b]8;;http://evil\\x07link\\x1b]8;;\\x07"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("col\tumn", "col\\tumn"),
        ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
        ("c1\x85\x9b[2J", "c1\\x85\\x9b[2J"),  # NEL and the 8-bit CSI
        ("abc\u202edef", "abc\\u202edef"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ],
)
def test_safe_escapes_controls_bidi_and_newlines(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_every_unsafe_character_is_replaced_by_printable_ascii() -> None:
    assert {chr(c) for c in range(0x20)} <= UNSAFE
    assert {chr(c) for c in range(0x7F, 0xA0)} <= UNSAFE
    for ch in UNSAFE:
        out = safe(f"x{ch}y")
        assert out.startswith("x\\") and out.endswith("y")
        assert out.isascii() and out.isprintable(), repr(out)
        assert len(out.splitlines()) == 1


def test_the_escaped_text_is_one_line_of_its_printed_width() -> None:
    hostile = "=HYPERLINK(1)\r\n\x1b[2K\u202eevil"
    out = safe(hostile)
    assert out.splitlines() == [out]
    assert len(out) == len("=HYPERLINK(1)") + len("\\r\\n\\x1b[2K\\u202eevil")


def test_non_strings_and_none() -> None:
    assert safe(None) == ""
    assert safe(42) == "42"
