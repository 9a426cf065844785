"""JSON on the wire is UTF-8 (RFC 8259): UTF-16, UTF-32 and byte-order-marked messages, which the
standard library's encoding detection used to accept, are refused with the reason (#17)."""

from __future__ import annotations

import pytest

from driftloop.services.ingestion.core import batches as core
from driftloop.services.ingestion.core.labels import parse_label_message
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit
ROW = '{"x0": 1.5, "label": "a"}'


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (ROW.encode("utf-16"), "byte-order mark"),
        (ROW.encode("utf-16-le"), "not valid JSON"),
        (ROW.encode("utf-16-be"), "not valid JSON"),
        (ROW.encode("utf-32"), "byte-order mark"),
        (ROW.encode("utf-32-be"), "not valid JSON"),
        (b"\xef\xbb\xbf" + ROW.encode(), "byte-order mark"),
        (ROW.encode("latin-1").replace(b"a", b"\xe9"), "can't decode"),
    ],
)
def test_rows_in_anything_but_utf8_are_refused_saying_why(value: bytes, why: str) -> None:
    with pytest.raises(InvalidInput, match="is not valid JSON") as refused:
        core.parse_json_message(b"people", value)
    assert why in str(refused.value)


def test_labels_follow_the_same_rule() -> None:
    label = '{"model": "m", "request_id": "r1", "label": "a"}'
    assert parse_label_message(label.encode())
    with pytest.raises(InvalidInput, match="byte-order mark"):
        parse_label_message(label.encode("utf-8-sig"))


def test_utf8_rows_with_non_ascii_text_pass() -> None:
    _, rows = core.parse_json_message(b"people", '{"city": "Zürich", "x0": 1}'.encode())
    assert rows == [{"city": "Zürich", "x0": 1}]
