"""Offset windows of the JSON topics (core/windows.py): where batches are cut, and that a
redelivery from any commit point cuts and names them exactly as the first run did."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.services.ingestion.core.batches import JsonMessage
from driftloop.services.ingestion.core.json_rows import Row, row_pieces
from driftloop.services.ingestion.core.windows import (
    Bundle,
    PartitionWindows,
    Step,
    WindowPolicy,
)
from driftloop.shared.bus import topics

pytestmark = pytest.mark.unit

TS = 1_700_000_000_000


def message(offset: int, value: object, key: bytes = b"d", timestamp: int = TS) -> JsonMessage:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return JsonMessage(topics.INGEST_JSON, 0, offset, timestamp, key, data)


def windows(policy: WindowPolicy) -> PartitionWindows[Row]:
    return PartitionWindows(topics.INGEST_JSON, 0, policy, row_pieces)


def run(
    messages: list[JsonMessage], policy: WindowPolicy, *, flush: bool = True
) -> tuple[list[Bundle[Row]], list[int], list[int]]:
    """Feed messages in order: the bundles cut, the commit points, the refused offsets."""
    feed = windows(policy)
    steps: list[Step[Row]] = [feed.add(m, now=0.0) for m in messages]
    if flush:
        steps.append(feed.flush())
    bundles = [b for s in steps for b in s.bundles]
    commits = [s.commit for s in steps if s.commit is not None]
    refused = [r.message.offset for s in steps for r in s.refused]
    return bundles, commits, refused


def shape(bundles: list[Bundle[Row]]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(b.group, b.batch_id, tuple(m.offset for m, _ in b.parts)) for b in bundles]


def single_rows(count: int, datasets: tuple[bytes, ...] = (b"d",)) -> list[JsonMessage]:
    return [message(i, {"n": i}, key=datasets[i % len(datasets)]) for i in range(count)]


def test_single_row_messages_are_cut_at_window_ends() -> None:
    bundles, commits, _ = run(single_rows(2500), WindowPolicy(window_offsets=1000))
    assert [(b.first_offset, len(b.items)) for b in bundles] == [
        (0, 1000),
        (1000, 1000),
        (2000, 500),
    ]
    assert commits == [0, 1000, 2000, 2500]
    assert len({b.batch_id for b in bundles}) == 3
    assert all(b.batch_id.startswith("j") and len(b.batch_id) == 32 for b in bundles)


def test_datasets_never_share_a_batch_and_keep_their_rows_in_order() -> None:
    bundles, _, _ = run(single_rows(30, (b"a", b"b", b"c")), WindowPolicy(window_offsets=10))
    assert len(bundles) == 9
    for bundle in bundles:
        offsets = [m.offset for m, _ in bundle.parts]
        assert {m.key for m, _ in bundle.parts} == {bundle.group.encode()}
        assert offsets == sorted(offsets) and [r["n"] for r in bundle.items] == offsets


def test_a_group_is_cut_at_its_row_limit_and_a_big_message_travels_alone() -> None:
    messages = [message(i, [{"n": i}] * 3) for i in range(5)] + [message(5, [{"n": 5}] * 20)]
    bundles, commits, _ = run(messages, WindowPolicy(max_rows=7))
    assert [len(b.items) for b in bundles] == [6, 6, 3, 20]
    # the only dataset of the partition was cut each time: every cut is a commit point
    assert commits == [0, 2, 4, 6, 6]


def test_a_row_limit_cut_of_one_dataset_is_no_commit_point_while_another_holds_rows() -> None:
    messages = [message(0, {"n": 0}, key=b"other")] + [
        message(i, [{"n": i}] * 4) for i in range(1, 4)
    ]
    bundles, commits, _ = run(messages, WindowPolicy(max_rows=8), flush=False)
    assert [(b.group, len(b.items)) for b in bundles] == [("d", 8)]
    assert commits == [0], "only the start, where nothing was held"


@pytest.mark.parametrize(
    ("policy", "rows"),
    [
        (WindowPolicy(max_bytes=100), [{"n": i, "pad": "x" * 30} for i in range(6)]),
        (WindowPolicy(max_columns=3), [{f"c{i}": i} for i in range(6)]),
        (WindowPolicy(max_cells=6), [{"a": i, "b": i} for i in range(6)]),
    ],
    ids=["json bytes", "columns", "cells"],
)
def test_a_group_is_cut_before_a_message_would_pass_its_size_limits(
    policy: WindowPolicy, rows: list[dict[str, Any]]
) -> None:
    bundles, _, _ = run([message(i, row) for i, row in enumerate(rows)], policy)
    assert len(bundles) > 1
    assert sum(len(b.items) for b in bundles) == len(rows)
    for bundle in bundles:
        columns = {name for row in bundle.items for name in row}
        assert len(columns) <= policy.max_columns
        assert len(columns) * len(bundle.items) <= policy.max_cells
        assert sum(len(m.value or b"") for m, _ in bundle.parts) <= policy.max_bytes


def test_bad_messages_are_refused_and_their_neighbours_kept() -> None:
    messages = [
        message(0, {"n": 0}),
        message(1, b"{nope"),
        message(2, {"n": 2}),
        message(3, [{"n": 3}, 4]),
        message(4, {"n": 4}, key=b"bad key!"),
        message(5, {"n": 5}),
    ]
    bundles, commits, refused = run(messages, WindowPolicy())
    assert refused == [1, 3, 4]
    assert [[r["n"] for r in b.items] for b in bundles] == [[0, 2, 5]]
    assert commits == [0, 6]


def test_a_refused_message_on_an_empty_partition_is_a_commit_point() -> None:
    _, commits, refused = run([message(7, b"[]")], WindowPolicy(), flush=False)
    assert (refused, commits) == ([7], [8])


def test_the_linger_deadline_starts_with_the_first_held_message() -> None:
    feed = windows(WindowPolicy(linger_s=0.5))
    assert feed.deadline is None and not feed.held
    feed.add(message(0, {"n": 0}), now=10.0)
    feed.add(message(1, {"n": 1}), now=10.3)
    assert feed.deadline == 10.5 and feed.held
    step = feed.flush()
    assert step.commit == 2 and [len(b.items) for b in step.bundles] == [2]
    assert feed.deadline is None
    feed.add(message(2, {"n": 2}), now=11.0)
    assert feed.deadline == 11.5


def test_ids_cover_place_time_content_and_dataset() -> None:
    def one(msg: JsonMessage) -> str:
        feed = PartitionWindows(msg.topic, msg.partition, WindowPolicy(), row_pieces)
        feed.add(msg, now=0.0)
        [bundle] = feed.flush().bundles
        return bundle.batch_id

    first = one(message(0, {"n": 0}))
    others = {
        one(message(1, {"n": 0})),
        one(message(0, {"n": 1})),
        one(message(0, {"n": 0}, timestamp=TS + 1)),
        one(message(0, {"n": 0}, key=b"e")),
        one(JsonMessage(topics.INGEST_JSON, 1, 0, TS, b"d", b'{"n": 0}')),
    }
    assert first == one(message(0, {"n": 0})), "a redelivered message"
    assert first not in others and len(others) == 5


def test_held_bytes_past_the_limit_cut_every_group() -> None:
    messages = [message(i, {"pad": "x" * 40}, key=b"abc"[i % 3 : i % 3 + 1]) for i in range(9)]
    assert len(messages[0].value or b"") == 51  # two fit in 150 bytes, three do not
    bundles, commits, _ = run(messages, WindowPolicy(max_held_bytes=150), flush=False)
    assert commits == [0, 2, 4, 6, 8]
    assert [[m.offset for m, _ in b.parts] for b in bundles] == [[i] for i in range(8)]


def test_a_rewound_partition_lets_go_of_what_it_held() -> None:
    feed = windows(WindowPolicy())
    feed.add(message(5, {"n": 5}), now=0.0)
    step = feed.add(message(3, {"n": 3}), now=0.0)
    assert [[r["n"] for r in b.items] for b in step.bundles] == [[5]] and step.commit == 3


def test_a_policy_needs_positive_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        WindowPolicy(window_offsets=0)


KEYS = st.sampled_from([b"a", b"b", b"c"])
VALUES = st.one_of(
    st.integers(1, 6).map(lambda n: [{"n": 0}] * n),
    st.just(b"{broken"),
    st.just(b"[]"),
)


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=60),
    window=st.integers(1, 25),
    max_rows=st.integers(1, 12),
    restart=st.integers(0, 1000),
)
def test_a_redelivery_from_any_commit_point_cuts_and_names_batches_the_same(
    items: list[tuple[bytes, object]], window: int, max_rows: int, restart: int
) -> None:
    """The property the commit protocol relies on: every bundle of a run that starts from a
    commit point is a bundle of the first run (same id, same messages), and every message
    the first run cut is in exactly one bundle."""
    messages = [message(i, value, key=key) for i, (key, value) in enumerate(items)]
    policy = WindowPolicy(window_offsets=window, max_rows=max_rows)
    bundles, commits, refused = run(messages, policy)
    cut = [m.offset for b in bundles for m, _ in b.parts]
    # a message of several groups would appear once per group; rows messages have one
    assert sorted(cut + refused) == [m.offset for m in messages]
    start = commits[restart % len(commits)]
    again, _, _ = run(messages[start:], policy)
    assert set(shape(again)) <= set(shape(bundles))
    assert {o for _, _, offsets in shape(again) for o in offsets} == {o for o in cut if o >= start}


def test_a_redelivery_replaying_the_time_cuts_cuts_and_names_batches_the_same() -> None:
    stream = single_rows(300, datasets=(b"a", b"b"))
    policy = WindowPolicy(window_offsets=1000)
    first = windows(policy)
    before: list[Bundle[Row]] = []
    for m in stream[:40]:
        before += first.add(m, now=0.0).bundles
    assert first.next_offset == 40
    before += first.flush().bundles  # e.g. the linger: a cut by time, at 40
    for m in stream[40:70]:
        before += first.add(m, now=0.0).bundles
    before += first.flush().bundles  # and at 70
    again = windows(policy)  # a redelivery from 0 reading further than the first run did
    again.replay([70, 40])
    after = [b for m in stream for b in again.add(m, now=0.0).bundles] + again.flush().bundles
    assert shape(before) == shape(after)[: len(before)]
    plain, _, _ = run(stream, policy)  # without the cuts: other batches, other ids
    assert not {b.batch_id for b in before} & {b.batch_id for b in plain}


def test_a_replayed_cut_at_a_missing_offset_cuts_before_the_next_message() -> None:
    replay = windows(WindowPolicy(window_offsets=1000))
    replay.replay([5])
    stream = [m for m in single_rows(10) if m.offset != 5]  # e.g. a transaction marker
    bundles = [b for m in stream for b in replay.add(m, now=0.0).bundles]
    assert shape(bundles) == [("d", shape(bundles)[0][1], (0, 1, 2, 3, 4))]
