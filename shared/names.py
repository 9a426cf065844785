"""Validation of the names users choose: datasets, models, object keys.

Names end up in object keys and file paths, so they are checked once here (no traversal).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from driftloop.shared.errors import InvalidInput, TooLarge

MAX_TEXT_CHARS = 4096
"""Free text a caller attaches to a decision or a run (reasons, comments, authors): it is
stored in audit rows and events, so it is kept to a paragraph."""

# why fullmatch and not `$`: `$` also matches before a final newline, so "m1\n" passed
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SHOWN_CHARS = 80
"""How much of a refused value an error message echoes: enough to recognise it, never so much
that the message itself becomes a problem (gRPC metadata limits, terminals, logs)."""
MAX_COLUMN_CHARS = 256
# Unicode categories never allowed in a column name: controls (Cc: ESC, NUL, newline), formats
# (Cf: bidirectional overrides, zero-width characters), separators other than space, private use,
# surrogates and unassigned code points.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}


def shown(value: str) -> str:
    """`value` as an error message may echo it: repr'd (escapes visible), cut to SHOWN_CHARS."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def is_name(value: str) -> bool:
    """Whether `value` is a valid dataset/model name (check_name without the error)."""
    return bool(_NAME.fullmatch(value)) and ".." not in value


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid dataset/model name, else raise InvalidInput saying why."""
    if not value:
        raise InvalidInput(f"{kind} name is empty")
    if not is_name(value):
        raise InvalidInput(
            f"{kind} name {shown(value)} is invalid: use 1-128 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value


def check_key(key: str) -> str:
    """Return an object-store key if it is relative and has no '..' or empty segments."""
    if not key or key.startswith("/") or "\\" in key or not key.isprintable():
        raise InvalidInput(
            f"object key {shown(key)} must be a relative, printable path with '/' separators"
        )
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"object key {shown(key)} has an empty, '.' or '..' segment")
    return key


def check_text(field: str, value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Return free text `value` if it is at most `limit` characters, else raise TooLarge."""
    if len(value) > limit:
        raise TooLarge(f"{field} is {len(value)} characters; the limit is {limit}")
    return value


def check_column_name(value: str) -> str:
    """Return a column name if it is printable and already in Unicode NFKC form, else raise
    InvalidInput naming the offending character (control, bidirectional or zero-width ones
    could hide the real name from an operator, or write into a terminal)."""
    if not value or not value.strip():
        raise InvalidInput("column name is empty")
    if len(value) > MAX_COLUMN_CHARS:
        raise InvalidInput(
            f"column name {shown(value)} is longer than {MAX_COLUMN_CHARS} characters"
        )
    for ch in value:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise InvalidInput(
                f"column name {shown(value)} contains U+{ord(ch):04X} "
                f"({unicodedata.name(ch, 'unnamed')}, category {category}): not allowed in a name"
            )
    normal = unicodedata.normalize("NFKC", value)
    if normal != value:
        raise InvalidInput(
            f"column name {shown(value)} is not in Unicode NFKC form (it reads as {shown(normal)})"
        )
    return value


def check_column_names(values: Iterable[str]) -> list[str]:
    """Check every name, and refuse two that are the same after NFKC normalisation and case
    folding (they would look alike to an operator and collide in a DataFrame)."""
    seen: dict[str, str] = {}
    names = []
    for value in values:
        check_column_name(value)
        folded = unicodedata.normalize("NFKC", value).casefold()
        if folded in seen and seen[folded] != value:
            raise InvalidInput(
                f"column names {shown(seen[folded])} and {shown(value)} differ only in case or "
                "Unicode form"
            )
        seen[folded] = value
        names.append(value)
    return names
