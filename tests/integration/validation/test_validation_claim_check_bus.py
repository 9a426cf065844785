"""The validation service on a real broker publishes each curated file on
driftloop.records.validated as a small claim check that resolves to the stored file (key, rows,
byte size, SHA-256, schema hash, manifest version); with the inline opt-in
(DRIFTLOOP_VALIDATION_VALIDATED_INLINE_MAX_BYTES) files up to the limit travel whole again."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import read_events, stack_env, start_process, stop_process, wait_until

from driftloop.protos.events.v1 import events_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.manifest import DatasetManifest, latest_manifest, manifest_head
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.records import table_to_ipc
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SMALL_MESSAGE = 1024
"""Every claim check (envelope included) is smaller than this."""
INLINE_LIMIT = 1 << 20
BIG_ROWS = 200_000
"""Random doubles barely compress: about 1.6 MB of Parquet, over INLINE_LIMIT."""


def noisy(rows: int, seed: int) -> pa.Table:
    return pa.table({"x": np.random.default_rng(seed).random(rows)})


def start_validation(common: CommonSettings, log: Path, env: dict[str, str]) -> object:
    argv = [sys.executable, "-m", "driftloop.services.validation"]
    full = {**stack_env(common), "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(), **env}
    proc = start_process(argv, env=full, log_path=str(log))
    wait_for_port("127.0.0.1", common.ports.grpc("validation"), timeout=60)
    return proc


async def send_batches(common: CommonSettings, dataset: str, tables: list[pa.Table]) -> None:
    """What ingestion publishes: one RecordBatch (Arrow IPC) per table on driftloop.records.raw."""
    publisher = EventPublisher(common.kafka_connection(), "test-ingestion")
    await publisher.start()
    try:
        for i, table in enumerate(tables):
            batch = events_pb2.RecordBatch(
                dataset=dataset,
                batch_id=f"{dataset}-{i}",
                arrow_ipc=table_to_ipc(table),
                row_count=table.num_rows,
                source="grpc",
            )
            await publisher.publish(topics.RECORDS_RAW, dataset, envelope.new_event("test", batch))
    finally:
        await publisher.stop()


def curated(store: ObjectStore, dataset: str, rows: int) -> DatasetManifest | None:
    head = manifest_head(store, dataset)
    if head is None or head.total_rows < rows:
        return None
    return latest_manifest(store, dataset)


def validated(
    common: CommonSettings, datasets: set[str], files: int
) -> list[tuple[events_pb2.CuratedRows, int]]:
    """The CuratedRows events of `datasets` with their message sizes, once `files` arrived."""
    sizes: dict[str, int] = {}

    def keep(record: object, event: envelope.Envelope) -> bool:
        if event.type != "CuratedRows" or event.curated_rows.dataset not in datasets:
            return False
        sizes[event.event_id] = len(record.value)  # type: ignore[attr-defined]
        return True

    found = asyncio.run(
        read_events(
            common.bootstrap(),
            topics.RECORDS_VALIDATED,
            keep,
            lambda events: len({e.curated_rows.file_key for e in events}) >= files,
        )
    )
    return [(e.curated_rows, sizes[e.event_id]) for e in found]


def test_validated_messages_are_small_claim_checks_of_the_stored_files(
    common: CommonSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(common.bootstrap()))
    store = open_object_store(common)
    dataset = f"claims-{uuid.uuid4().hex[:8]}"
    tables = [noisy(BIG_ROWS, seed) for seed in range(3)]
    validation = start_validation(common, tmp_path / "validation.log", {})
    try:
        asyncio.run(send_batches(common, dataset, tables))
        head = wait_until(lambda: curated(store, dataset, 3 * BIG_ROWS), 90, "rows curated")
    finally:
        stop_process(validation)  # type: ignore[arg-type]

    entries = {f.key: f for f in head.files}
    events = validated(common, {dataset}, len(entries))
    assert {c.file_key for c, _ in events} == entries.keys(), "each curated file, by reference"
    for claim, size in events:
        assert size < SMALL_MESSAGE, f"a {size}-byte message for {claim.file_key}"
        assert claim.parquet == b""
        stored = store.get(claim.file_key)
        assert claim.byte_size == len(stored) > INLINE_LIMIT
        assert claim.sha256 == entries[claim.file_key].sha256
        assert claim.sha256 == hashlib.sha256(stored).hexdigest()
        assert (
            claim.row_count
            == entries[claim.file_key].rows
            == pq.read_metadata(io.BytesIO(stored)).num_rows
        )
        assert claim.schema_hash == head.schema_hash and len(claim.schema_hash) == 64
        assert 1 <= claim.manifest_version <= head.version
        assert sum(b.rows for b in claim.batches) == claim.row_count
    resolved = pa.concat_tables(pq.read_table(io.BytesIO(store.get(c.file_key))) for c, _ in events)
    assert sorted(resolved["x"].to_pylist()) == sorted(pa.concat_tables(tables)["x"].to_pylist())


def test_the_inline_opt_in_sends_files_up_to_its_limit_whole(
    common: CommonSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(common.bootstrap()))
    store = open_object_store(common)
    small, big = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("small", "big"))
    env = {"DRIFTLOOP_VALIDATION_VALIDATED_INLINE_MAX_BYTES": str(INLINE_LIMIT)}
    validation = start_validation(common, tmp_path / "validation.log", env)
    try:
        asyncio.run(send_batches(common, small, [noisy(1000, 1)]))
        asyncio.run(send_batches(common, big, [noisy(BIG_ROWS, 2)]))
        wait_until(lambda: curated(store, small, 1000), 90, "small rows curated")
        wait_until(lambda: curated(store, big, BIG_ROWS), 90, "big rows curated")
    finally:
        stop_process(validation)  # type: ignore[arg-type]

    by_dataset = {c.dataset: (c, size) for c, size in validated(common, {small, big}, 2)}
    inline, inline_size = by_dataset[small]
    stored = store.get(inline.file_key)
    assert inline.parquet == stored and inline.byte_size == len(stored)
    assert hashlib.sha256(inline.parquet).hexdigest() == inline.sha256
    assert pq.read_table(io.BytesIO(inline.parquet)).num_rows == inline.row_count == 1000
    assert inline_size > len(stored), "the message carries the file"

    reference, reference_size = by_dataset[big]
    assert reference.parquet == b"" and reference_size < SMALL_MESSAGE, "over the limit"
    assert reference.byte_size == len(store.get(reference.file_key)) > INLINE_LIMIT
