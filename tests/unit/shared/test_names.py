"""Names and object keys are checked before they reach paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import check_key, check_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["demo", "credit-2024", "a.b_c", "X" * 128])
def test_good_names(name: str) -> None:
    assert check_name("dataset", name) == name


@pytest.mark.parametrize(
    "name", ["", "../etc", "a/b", "-lead", ".hidden", "a..b", "X" * 129, "a b"]
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
