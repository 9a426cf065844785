"""Names and object keys are checked before they reach paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import (
    check_column_name,
    check_column_names,
    check_key,
    check_name,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["demo", "credit-2024", "a.b_c", "X" * 128])
def test_good_names(name: str) -> None:
    assert check_name("dataset", name) == name


@pytest.mark.parametrize(
    "name", ["", "../etc", "a/b", "-lead", ".hidden", "a..b", "X" * 129, "a b", "m1\n", "people\n"]
)
def test_bad_names_say_why(name: str) -> None:
    with pytest.raises(InvalidInput, match="dataset name"):
        check_name("dataset", name)


@pytest.mark.parametrize("key", ["/abs", "a/../b", "a//b", "", "a\\b", "./a"])
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


@given(st.text(max_size=40))
def test_accepted_names_never_traverse(name: str) -> None:
    try:
        check_name("model", name)
    except InvalidInput:
        return
    assert "/" not in name and ".." not in name and not name.startswith(".")


def test_a_long_refused_name_is_echoed_cut_short() -> None:
    with pytest.raises(InvalidInput) as raised:
        check_name("model", "x" * 100_000)
    assert len(str(raised.value)) < 300 and "100000 characters" in str(raised.value)


@pytest.mark.parametrize(
    "column",
    [
        "esc\x1b[31mred",
        "x0\u0000",
        "x1\u202e",
        "zero\u200bwidth",
        "tab\there",
        "line\n",
        "\ufb01le",  # the "fi" ligature: NFKC turns it into "fi"
        "",
        " ",
        "y" * 257,
    ],
)
def test_unprintable_or_unnormalised_column_names_are_refused(column: str) -> None:
    with pytest.raises(InvalidInput, match="column name"):
        check_column_name(column)


@pytest.mark.parametrize(
    "column", ["x0", "label", "request_id", "[link=https://evil.example]ok[/link]", "temp °C"]
)
def test_printable_column_names_pass(column: str) -> None:
    assert check_column_name(column) == column


def test_names_that_collide_after_normalisation_are_refused() -> None:
    assert check_column_names(["x0", "x1"]) == ["x0", "x1"]
    with pytest.raises(InvalidInput, match="differ only in case"):
        check_column_names(["Label", "label"])
