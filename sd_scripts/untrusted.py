"""Text that comes from someone else's file (a LoRA's metadata, a tensor's name, a caption), made safe to show.

Such text may hold terminal escape sequences, carriage returns that overwrite a console line, right-to-left
overrides that make a file name read differently, or a megabyte of anything. `shown` escapes every control and
bidirectional-formatting character (`\\x1b`, `\\u202e`) and cuts the text to a length a popup or a console line can
carry, saying how much was left out. It is for showing only: values that are used (settings) go through their own
checks.
"""

from __future__ import annotations

import unicodedata

VALUE_LIMIT = 200  # characters of one value shown

# Unicode's "format" characters that reorder or hide text (bidirectional overrides and isolates, zero-width ones).
_INVISIBLE = {"Cf"}


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """`value` as text with control and formatting characters escaped, cut to `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    escaped = "".join(_escaped(character) for character in text[: limit * 2])
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}... ({len(text)} characters in all)"


def _escaped(character: str) -> str:
    code = ord(character)
    if code >= 0x20 and code != 0x7F and not 0x80 <= code < 0xA0 and unicodedata.category(character) not in _INVISIBLE:
        return character
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
