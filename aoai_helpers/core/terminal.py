"""Text from users and callers, made safe to print on a terminal.

Business-unit names, subscription ids and names, cost centres, model and deployment names come
from whoever set up a mapping, wrote the spec or called the gateway. Printed raw they could
drive the terminal (``ESC [`` sequences: colours, cursor moves, clearing the screen, window
titles, OSC 8 links), reorder what is shown (Unicode bidi controls such as U+202E RIGHT-TO-LEFT
OVERRIDE) or forge table rows (a newline inside a name). :func:`safe` replaces each such
character with a visible escape, so the text keeps its meaning and shows what it holds::

    >>> safe("Fin\\x1b[31mance")
    'Fin\\\\x1b[31mance'
    >>> safe("a\\nb")
    'a\\\\nb'
    >>> safe("abc\\u202edef")
    'abc\\\\u202edef'

Escaped: the C0 controls U+0000 to U+001F (tab, newline and carriage return as ``\\t``, ``\\n``,
``\\r``), DEL U+007F, the C1 controls U+0080 to U+009F, the bidi controls (U+061C, U+200E, U+200F,
U+202A to U+202E, U+2066 to U+2069) and the line and paragraph separators U+2028 and U+2029 (which
``str.splitlines`` and some terminals take for line breaks). Everything else, backslashes
included, is printed as it is: the escapes are for showing, not for reading back.

Column widths are to be computed on the escaped text (the text that is printed).
"""

from __future__ import annotations

from typing import Final

__all__ = ["UNSAFE", "safe"]

_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI: Final = (
    "\u061c",  # ARABIC LETTER MARK
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    *map(chr, range(0x202A, 0x202F)),  # LRE, RLE, PDF, LRO, RLO
    *map(chr, range(0x2066, 0x206A)),  # LRI, RLI, FSI, PDI
)
#: Every character :func:`safe` replaces.
UNSAFE: Final[frozenset[str]] = frozenset(
    [
        *map(chr, range(0x00, 0x20)),
        "\x7f",
        *map(chr, range(0x80, 0xA0)),
        *_BIDI,
        "\u2028",
        "\u2029",
    ]
)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_TABLE: Final = str.maketrans({ch: _escape(ch) for ch in UNSAFE})


def safe(text: object) -> str:
    """``text`` (``str()`` of anything else; ``None`` gives ``""``) with every character of
    :data:`UNSAFE` replaced by a visible escape (``\\x1b``, ``\\u202e``, ``\\n``…)."""
    if text is None:
        return ""
    return str(text).translate(_TABLE)
