"""What the CLI prints that came from outside (column names, model names, reasons, errors) passes
through `outside()` first, so a producer cannot write escape sequences or Rich markup into an
operator's terminal."""

from __future__ import annotations

import unicodedata

from rich.markup import escape

# Controls, formats (bidirectional overrides, zero-width), line/paragraph separators, private use,
# surrogates, unassigned: shown as \\uXXXX instead of being sent to the terminal.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}


def visible(text: str) -> str:
    """`text` with every control, bidirectional and zero-width character shown as an escape."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _HIDDEN:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def outside(value: object) -> str:
    """A value from outside, ready for a Rich console: control characters visible, markup
    (`[bold]`, `[link=...]`) escaped so that it prints as the literal text it is."""
    return escape(visible(str(value)))
