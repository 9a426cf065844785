"""One poll of the public JSON topics without a broker: row messages become batches with ids
stable per message, label messages become chunks per model with ids stable per poll, and one
bad message fails the whole poll before anything is published."""

from __future__ import annotations

import json

import pytest
from aiokafka import ConsumerRecord

from driftloop.services.ingestion.adapters.kafka import json_message
from driftloop.services.ingestion.core.batches import (
    JsonMessage,
    Limits,
    json_batches,
    message_batch_id,
)
from driftloop.services.ingestion.core.labels import json_label_chunks, poll_id
from driftloop.shared.bus import topics
from driftloop.shared.errors import InvalidInput, TooLarge

pytestmark = pytest.mark.unit


def message(
    offset: int, value: object, key: bytes | None = b"d", partition: int = 0
) -> JsonMessage:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return JsonMessage(topics.INGEST_JSON, partition, offset, 1_700_000_000_000, key, data)


def test_a_consumer_record_is_read_as_a_json_message() -> None:
    record = ConsumerRecord(topics.LABELS_JSON, 2, 9, 5, 0, b"k", b"v", None, 1, 1, ())
    assert json_message(record) == JsonMessage(topics.LABELS_JSON, 2, 9, 5, b"k", b"v")


def test_each_row_message_is_its_own_batch_with_an_id_from_its_place() -> None:
    polled = [message(0, {"a": 1}), message(1, [{"a": 2}, {"a": 3}], key=b"e")]
    batches = json_batches(polled, batch_rows=5000)
    assert [(b.dataset, b.row_count) for b in batches] == [("d", 1), ("e", 2)]
    first = polled[0]
    assert batches[0].batch_id == message_batch_id(0, 0, first.timestamp, first.value or b"")
    again = json_batches(polled, batch_rows=5000)
    assert [b.batch_id for b in again] == [b.batch_id for b in batches], "a redelivered poll"


def test_a_message_over_batch_rows_gets_numbered_ids() -> None:
    [one, two] = json_batches([message(0, [{"a": i} for i in range(3)])], batch_rows=2)
    assert (one.row_count, two.row_count) == (2, 1)
    assert two.batch_id == one.batch_id[:-1] + "1" and one.batch_id.endswith(".0")


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        (message(1, b"{nope"), InvalidInput, "not valid JSON"),
        (message(1, {"a": 1}, key=None), InvalidInput, "no key"),
        (message(1, [{"a": i} for i in range(4)]), TooLarge, "MAX_ROWS_PER_REQUEST"),
    ],
)
def test_one_bad_row_message_fails_the_poll(
    bad: JsonMessage, error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        json_batches([message(0, {"a": 1}), bad], batch_rows=5000, limits=Limits(max_rows=3))


def label(offset: int, *items: dict[str, object]) -> JsonMessage:
    data = json.dumps(list(items)).encode()
    return JsonMessage(topics.LABELS_JSON, 0, offset, 1_700_000_000_000, None, data)


def test_label_messages_become_chunks_per_model_with_ids_from_the_poll() -> None:
    polled = [
        label(0, {"model": "m", "request_id": "r1", "label": 1}),
        label(1, {"model": "n", "request_id": "r2", "label": "x"}),
        label(2, {"model": "m", "request_id": "r3", "label": 0}),
    ]
    chunks = json_label_chunks(polled, chunk=5000)
    assert [(c.model, c.request_ids, c.labels) for c in chunks] == [
        ("m", ["r1", "r3"], ["1", "0"]),
        ("n", ["r2"], ["x"]),
    ]
    base = poll_id(polled)
    assert [c.batch_id for c in chunks] == [f"{base}-m", f"{base}-n"]
    assert [c.event_id for c in json_label_chunks(polled, chunk=5000)] == [
        c.event_id for c in chunks
    ], "a redelivered poll publishes the same events"
    small = json_label_chunks(polled, chunk=1)
    assert [c.batch_id for c in small[:2]] == [f"{base}-m.0", f"{base}-m.1"]


def test_poll_ids_differ_by_place_time_and_content() -> None:
    first = label(0, {"model": "m", "request_id": "r", "label": 1})
    ids = {
        poll_id([first]),
        poll_id([label(1, {"model": "m", "request_id": "r", "label": 1})]),
        poll_id([label(0, {"model": "m", "request_id": "r", "label": 2})]),
        poll_id([JsonMessage(topics.INGEST_JSON, 0, 0, first.timestamp, None, first.value)]),
        poll_id([JsonMessage(first.topic, 0, 0, 1, None, first.value)]),
    }
    assert len(ids) == 5 and poll_id([first]) == poll_id([first])
    assert all(i.startswith("j") and len(i) == 32 for i in ids)


def test_one_bad_label_message_fails_the_poll() -> None:
    good = label(0, {"model": "m", "request_id": "r1", "label": 1})
    with pytest.raises(InvalidInput, match="lacks"):
        json_label_chunks([good, label(1, {"model": "m", "label": 1})], chunk=5000)
