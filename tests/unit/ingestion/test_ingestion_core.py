"""Ingestion core: request rows to stamped batches, batching limits, JSON messages, errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from driftloop.services.ingestion.core import batches as core
from driftloop.services.ingestion.settings import IngestionSettings
from driftloop.shared import manifest
from driftloop.shared.errors import InvalidInput
from driftloop.shared.records import rows_to_table, table_to_ipc

pytestmark = pytest.mark.unit


def test_ingested_at_is_the_manifest_column() -> None:
    assert core.INGESTED_AT == manifest.INGESTED_AT


def test_rows_become_one_stamped_batch() -> None:
    rows = [{"age": 30.0, "color": "red"}, {"age": 41.0, "color": None}]
    [batch] = core.make_batches("people", rows=rows, now=1234.5)
    assert batch.dataset == "people"
    assert len(batch.batch_id) == 32 and int(batch.batch_id, 16) >= 0
    assert batch.row_count == 2
    assert batch.table.column_names == ["age", "color", "_ingested_at"]
    assert batch.table.schema.field("_ingested_at").type == pa.float64()
    assert batch.table.column("_ingested_at").to_pylist() == [1234.5, 1234.5]
    assert batch.table.column("color").to_pylist() == ["red", None]


def test_rows_missing_a_column_get_nulls() -> None:
    [batch] = core.make_batches("d", rows=[{"a": 1}, {"b": "x"}], now=1.0)
    assert batch.table.column("a").to_pylist() == [1, None]
    assert batch.table.column("b").to_pylist() == [None, "x"]


def test_arrow_ipc_rows_and_client_stamp_is_overwritten() -> None:
    table = pa.table({"x": [1, 2, 3], "_ingested_at": [0.0, 0.0, 0.0]})
    [batch] = core.make_batches("d", arrow_ipc=table_to_ipc(table), now=99.0)
    assert batch.table.column("x").to_pylist() == [1, 2, 3]
    assert batch.table.column("_ingested_at").to_pylist() == [99.0] * 3
    assert batch.table.column_names.count("_ingested_at") == 1


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [
        (1, 5000, [1]),
        (5000, 5000, [5000]),
        (5001, 5000, [5000, 1]),
        (10, 3, [3, 3, 3, 1]),
    ],
)
def test_batches_hold_at_most_batch_rows(total: int, size: int, expected: list[int]) -> None:
    rows = [{"i": i} for i in range(total)]
    batches = core.make_batches("d", rows=rows, batch_rows=size, now=1.0)
    assert [b.row_count for b in batches] == expected
    assert len({b.batch_id for b in batches}) == len(batches)
    values = [v for b in batches for v in b.table.column("i").to_pylist()]
    assert values == list(range(total)), "order is kept across batches"


def test_batch_rows_is_bounded_by_the_contract() -> None:
    with pytest.raises(ValueError, match="batch_rows"):
        core.split(pa.table({"a": [1]}), 5001)
    assert IngestionSettings().batch_rows == 5000
    with pytest.raises(ValueError):
        IngestionSettings(batch_rows=6000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": [{"a": 1}], "arrow_ipc": b"x"}, "not both|one or the other"),
        ({}, "no rows"),
        ({"rows": []}, "no rows"),
        ({"arrow_ipc": b"\x00garbage"}, "Arrow IPC"),
        ({"rows": [{"a": 1}, {"a": "text"}]}, "column 'a' mixes types"),
    ],
)
def test_bad_requests_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        core.make_batches("d", **kwargs)


def test_bad_dataset_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="dataset name"):
        core.make_batches("../etc", rows=[{"a": 1}])


def test_empty_arrow_table_is_refused() -> None:
    empty = pa.table({"a": pa.array([], type=pa.int64())})
    with pytest.raises(InvalidInput, match="zero rows"):
        core.make_batches("d", arrow_ipc=table_to_ipc(empty))


def test_json_object_and_array_messages() -> None:
    assert core.parse_json_message(b"d", b'{"a": 1}') == ("d", [{"a": 1}])
    value = json.dumps([{"a": 1}, {"a": 2.5, "b": "x"}]).encode()
    assert core.parse_json_message(b"d", value) == ("d", [{"a": 1}, {"a": 2.5, "b": "x"}])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (None, b'{"a": 1}', "no key"),
        (b"", b'{"a": 1}', "no key"),
        (b"\xff\xfe", b'{"a": 1}', "not UTF-8"),
        (b"bad/name", b'{"a": 1}', "dataset name"),
        (b"d", None, "empty value"),
        (b"d", b'{"a": 1', "not valid JSON"),
        (b"d", b"\xff{}", "not valid JSON"),
        (b"d", b"42", "JSON number"),
        (b"d", b'"text"', "JSON string"),
        (b"d", b"null", "JSON null"),
        (b"d", b"[]", "empty array"),
        (b"d", b'[{"a": 1}, [1, 2]]', "element 1 of the array is a JSON array"),
    ],
)
def test_bad_json_messages_say_why(key: bytes | None, value: bytes | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        core.parse_json_message(key, value)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_ipc_streams_a_producer_compressed_are_read_as_is(codec: str) -> None:
    from driftloop.shared.records import ipc_to_table

    table = pa.table({"x": list(range(2000)), "s": ["north", "south"] * 1000})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    assert len(data) < len(table_to_ipc(table)) / 2
    assert ipc_to_table(data).equals(table)


def test_json_messages_keep_the_standard_library_leniency_for_nan_and_infinity() -> None:
    # Python's json.dumps writes NaN and Infinity; orjson refuses them, the fallback reads them
    dataset, rows = core.parse_json_message(b"d", b'[{"a": NaN}, {"a": Infinity}, {"a": 1.5}]')
    values = [row["a"] for row in rows]
    assert dataset == "d" and values[0] != values[0] and values[1] == float("inf")
    assert values[2] == 1.5
    # what neither parser reads is refused with the standard library's wording
    with pytest.raises(InvalidInput, match="is not valid JSON: Expecting ',' delimiter"):
        core.parse_json_message(b"d", b"[1, 2")
    with pytest.raises(InvalidInput, match="is not valid JSON"):
        core.parse_json_message(b"d", b'{"a": "\xff"}')


def test_json_integers_beyond_64_bits_are_read_as_floats() -> None:
    _, rows = core.parse_json_message(b"d", b'{"a": 123456789012345678901234567890, "b": 7}')
    assert rows == [{"a": 1.2345678901234568e29, "b": 7}]
    assert isinstance(rows[0]["b"], int)


def test_row_dicts_with_differing_keys_become_columns_in_order_of_first_appearance() -> None:
    table = rows_to_table([{"a": 1, "b": 2.5}, {"b": 3.0, "c": "x"}, {"a": 5}, {"d": True}])
    assert table.column_names == ["a", "b", "c", "d"]
    assert table.to_pylist()[1] == {"a": None, "b": 3.0, "c": "x", "d": None}
    assert table.schema.field("a").type == pa.int64()


@pytest.mark.parametrize(
    "rows",
    [
        [{"a": 1, "s": "x"}, {"a": 2.5, "s": None}],  # same keys: Arrow's own conversion
        [{"s": "x", "a": 1}, {"a": 2.5, "s": None}],  # same keys, another order
        [{"a": 1}, {"a": 2.5, "s": "y"}],  # differing keys: column by column
    ],
)
def test_both_conversions_of_row_dicts_agree(rows: list[dict[str, object]]) -> None:
    table = rows_to_table(rows)
    assert table.column("a").to_pylist() == [1.0, 2.5]
    assert table.schema.field("a").type == pa.float64()
    assert table.column("s").type == pa.string()


@pytest.mark.parametrize("rows", [[{"a": 1}, {"a": "x"}], [{"a": 1, "b": 1}, {"a": "x"}]])
def test_a_column_mixing_types_is_named(rows: list[dict[str, object]]) -> None:
    with pytest.raises(InvalidInput, match="column 'a' mixes types"):
        rows_to_table(rows)
