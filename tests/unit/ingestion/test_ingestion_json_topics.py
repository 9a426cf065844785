"""The public JSON topics without a broker: a row message read into its dataset's piece (or
refused saying why), a cut bundle of rows converted into RowBatches, heterogeneous rows
included, and label messages coalesced per model into chunks with stable ids."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from aiokafka import ConsumerRecord

from driftloop.services.ingestion.adapters.json_windows import consumer_record, json_message
from driftloop.services.ingestion.core.batches import INGESTED_AT, JsonMessage, Limits
from driftloop.services.ingestion.core.json_rows import Row, bundle_batches, row_pieces
from driftloop.services.ingestion.core.labels import LabelChunk, bundle_label_chunks, label_pieces
from driftloop.services.ingestion.core.windows import Bundle, PartitionWindows, WindowPolicy
from driftloop.shared.bus import topics
from driftloop.shared.errors import InvalidInput, TooLarge

pytestmark = pytest.mark.unit


def message(
    offset: int, value: object, key: bytes | None = b"d", topic: str = topics.INGEST_JSON
) -> JsonMessage:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return JsonMessage(topic, 0, offset, 1_700_000_000_000, key, data)


def test_a_consumer_record_is_read_as_a_json_message_and_back() -> None:
    record = ConsumerRecord(topics.LABELS_JSON, 2, 9, 5, 0, b"k", b"v", None, 1, 1, ())
    read = json_message(record)
    assert read == JsonMessage(topics.LABELS_JSON, 2, 9, 5, b"k", b"v")
    back = consumer_record(read)
    assert (back.topic, back.partition, back.offset, back.key, back.value) == (
        topics.LABELS_JSON,
        2,
        9,
        b"k",
        b"v",
    )


def test_a_row_message_is_one_piece_of_its_dataset_with_its_columns() -> None:
    [piece] = row_pieces(message(0, [{"a": 1}, {"b": "x"}], key=b"people"))
    assert (piece.group, piece.items, piece.columns) == (
        "people",
        [{"a": 1}, {"b": "x"}],
        frozenset({"a", "b"}),
    )


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        (message(1, b"{nope"), InvalidInput, "not valid JSON"),
        (message(1, {"a": 1}, key=None), InvalidInput, "no key"),
        (message(1, [{"a": i} for i in range(4)]), TooLarge, "MAX_ROWS_PER_REQUEST"),
        (message(1, {"a": 1, "b": 2, "c": 3}), TooLarge, "MAX_COLUMNS"),
        (message(1, [{}, {}]), InvalidInput, "zero rows"),
        (message(1, {"": 1}), InvalidInput, "empty name"),
    ],
)
def test_a_bad_row_message_is_refused_saying_why(
    bad: JsonMessage, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        row_pieces(bad, Limits(max_rows=3, max_columns=2))


def cut(*messages: JsonMessage, policy: WindowPolicy | None = None) -> list[Bundle[Row]]:
    feed: PartitionWindows[Row] = PartitionWindows(
        topics.INGEST_JSON, 0, policy or WindowPolicy(), row_pieces
    )
    bundles = [b for m in messages for b in feed.add(m, now=0.0).bundles]
    return bundles + feed.flush().bundles


def test_rows_of_many_messages_become_one_stamped_table_with_nulls_where_missing() -> None:
    [bundle] = cut(message(0, {"a": 1}), message(1, [{"a": 2.5, "b": "x"}, {"b": "y"}]))
    made = bundle_batches(bundle, now=12.5)
    [batch] = made.batches
    assert made.refused == [] and batch.batch_id == bundle.batch_id
    assert batch.table.to_pydict() == {
        "a": [1.0, 2.5, None],
        "b": [None, "x", "y"],
        INGESTED_AT: [12.5] * 3,
    }


def test_a_bundle_over_batch_rows_gets_numbered_ids() -> None:
    [bundle] = cut(message(0, [{"a": i} for i in range(5)]))
    made = bundle_batches(bundle, now=0.0, batch_rows=2)
    assert [b.row_count for b in made.batches] == [2, 2, 1]
    assert [b.batch_id for b in made.batches] == [f"{bundle.batch_id}.{i}" for i in range(3)]


def test_rows_whose_types_disagree_are_split_by_message_and_a_bad_one_refused() -> None:
    [bundle] = cut(
        message(0, {"a": 1}),
        message(1, {"a": 2.5}),
        message(2, [{"a": 3}, {"a": "mixed"}]),
        message(3, {"a": "text"}),
        message(4, {"a": True}),
        message(5, {"a": False, "b": 1}),
    )
    made = bundle_batches(bundle, now=0.0)
    assert [(r.message.offset, type(r.error)) for r in made.refused] == [(2, InvalidInput)]
    assert "column 'a' mixes types" in made.refused[0].reason
    assert made.refused[0].reason.startswith("InvalidInput: ")
    assert [b.table.column("a").to_pylist() for b in made.batches] == [
        [1.0, 2.5],
        ["text"],
        [True, False],
    ]
    assert [b.table.schema.field("a").type for b in made.batches] == [
        pa.float64(),
        pa.string(),
        pa.bool_(),
    ]
    assert [b.batch_id for b in made.batches] == [f"{bundle.batch_id}.{i}" for i in range(3)]
    again = bundle_batches(bundle, now=0.0)
    assert [b.batch_id for b in again.batches] == [b.batch_id for b in made.batches]


def test_a_bundle_of_only_refused_messages_makes_no_batch() -> None:
    [bundle] = cut(message(0, [{"a": 1}, {"a": "x"}]))
    made = bundle_batches(bundle, now=0.0)
    assert made.batches == [] and len(made.refused) == 1


def label(offset: int, *items: dict[str, object]) -> JsonMessage:
    return message(offset, list(items), key=None, topic=topics.LABELS_JSON)


def test_label_messages_are_coalesced_per_model_with_stable_ids() -> None:
    polled = [
        label(0, {"model": "m", "request_id": "r1", "label": 1}),
        label(1, {"model": "n", "request_id": "r2", "label": "x"}),
        label(2, {"model": "m", "request_id": "r3", "label": 0}),
    ]

    def chunks(chunk: int) -> list[LabelChunk]:
        feed: PartitionWindows[tuple[str, str]] = PartitionWindows(
            topics.LABELS_JSON, 0, WindowPolicy(), label_pieces
        )
        bundles = [b for m in polled for b in feed.add(m, now=0.0).bundles]
        return [
            c for b in bundles + feed.flush().bundles for c in bundle_label_chunks(b, chunk=chunk)
        ]

    made = chunks(5000)
    assert [(c.model, c.request_ids, c.labels) for c in made] == [
        ("m", ["r1", "r3"], ["1", "0"]),
        ("n", ["r2"], ["x"]),
    ]
    assert [c.event_id for c in chunks(5000)] == [c.event_id for c in made], "redelivered"
    small = chunks(1)
    assert [c.batch_id for c in small[:2]] == [f"{made[0].batch_id}.0", f"{made[0].batch_id}.1"]


def test_one_label_message_naming_two_models_gives_each_its_piece() -> None:
    pieces = label_pieces(
        label(
            0,
            {"model": "m", "request_id": "r1", "label": 1},
            {"model": "n", "request_id": "r2", "label": 2},
            {"model": "m", "request_id": "r3", "label": 3},
        )
    )
    assert [(p.group, p.items) for p in pieces] == [
        ("m", [("r1", "1"), ("r3", "3")]),
        ("n", [("r2", "2")]),
    ]


def test_a_bad_label_message_is_refused_and_its_neighbours_kept() -> None:
    feed: PartitionWindows[tuple[str, str]] = PartitionWindows(
        topics.LABELS_JSON, 0, WindowPolicy(), label_pieces
    )
    good = label(0, {"model": "m", "request_id": "r1", "label": 1})
    bad = label(1, {"model": "m", "label": 1})
    refused = feed.add(good, now=0.0).refused + feed.add(bad, now=0.0).refused
    assert [(r.message.offset, "lacks ['request_id']" in r.reason) for r in refused] == [(1, True)]
    [bundle] = feed.flush().bundles
    assert bundle.items == [("r1", "1")]
