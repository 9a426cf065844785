"""Validation of the names users choose: datasets, models, object keys.

Names end up in object keys and file paths, so they are checked once here (no traversal).
"""

from __future__ import annotations

import re

from driftloop.shared.errors import InvalidInput, TooLarge

MAX_TEXT_CHARS = 4096
"""Free text a caller attaches to a decision or a run (reasons, comments, authors): it is
stored in audit rows and events, so it is kept to a paragraph."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid dataset/model name, else raise InvalidInput saying why."""
    if not value:
        raise InvalidInput(f"{kind} name is empty")
    if not _NAME.match(value) or ".." in value:
        raise InvalidInput(
            f"{kind} name {value!r} is invalid: use 1-128 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value


def check_key(key: str) -> str:
    """Return an object-store key if it is relative and has no '..' or empty segments."""
    if not key or key.startswith("/") or "\\" in key:
        raise InvalidInput(f"object key {key!r} must be a relative path with '/' separators")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def check_text(field: str, value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Return free text `value` if it is at most `limit` characters, else raise TooLarge."""
    if len(value) > limit:
        raise TooLarge(f"{field} is {len(value)} characters; the limit is {limit}")
    return value
