"""The claim check on driftloop.records.validated: by default a CuratedRows event names its curated
file (key, rows, byte size, SHA-256, schema hash, manifest version) without carrying it, and the
reference resolves to the stored file; the bytes travel only when asked for and small enough."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.validation.adapters import pb
from driftloop.services.validation.adapters.kafka import MAX_INLINE_PARQUET, RecordBatchHandler
from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.catalog import SchemaCatalog
from driftloop.services.validation.core.outcomes import CuratedRows
from driftloop.services.validation.core.pipeline import RawBatch, ValidationPipeline
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.schema import ColumnSpec
from driftloop.services.validation.settings import MAX_INLINE_BYTES, ValidationSettings
from driftloop.shared.bus import envelope
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.manifest import latest_manifest
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit

DEFAULT_INLINE = ValidationSettings.model_fields["validated_inline_max_bytes"].default
SMALL_MESSAGE = 1024
"""A claim check's envelope stays under this, whatever the size of the file it names."""


def pipeline(store: LocalObjectStore, max_inline_bytes: int) -> ValidationPipeline:
    catalog = SchemaCatalog(store, cache_seconds=0)
    return ValidationPipeline(store, catalog, QualityTracker(), max_inline_bytes=max_inline_bytes)


async def curate(pipe: ValidationPipeline, batch: RawBatch) -> list[CuratedRows]:
    [run] = await pipe.curate(await pipe.check([batch]))
    return list(run.files)


def noisy_rows(batch_id: str, rows: int) -> RawBatch:
    """Rows that compress badly, so the curated file is megabytes."""
    values = np.random.default_rng(7).random(rows)
    return RawBatch("d", batch_id, pa.table({"x": values}), "grpc")


def test_the_default_setting_publishes_references_only() -> None:
    assert DEFAULT_INLINE == 0
    assert MAX_INLINE_BYTES == MAX_INLINE_PARQUET, "the setting's bound is the adapter's"


async def test_a_curated_file_is_published_as_a_claim_check_that_resolves(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    SchemaCatalog(store).put(schemas.declare("d", [ColumnSpec("x", "float")]))
    with capture_logs() as logs:
        [curated] = await curate(pipeline(store, DEFAULT_INLINE), noisy_rows("b1", 200_000))
    assert [e for e in logs if e["log_level"] == "warning"] == [], "references are no warning"
    head = latest_manifest(store, "d")
    assert head is not None
    [entry] = head.files

    message = events_pb2.CuratedRows.FromString(pb.curated_rows_to_pb(curated).SerializeToString())
    assert message.parquet == b"", "the file does not travel"
    assert message.dataset == "d"
    assert message.manifest_version == head.version == 1
    assert message.file_key == entry.key
    assert message.row_count == entry.rows == 200_000
    assert message.schema_hash == head.schema_hash == SchemaCatalog(store).get("d").schema_hash
    assert [(b.batch_id, b.rows, b.source) for b in message.batches] == [("b1", 200_000, "grpc")]
    stored = store.get(message.file_key)
    assert message.byte_size == len(stored) > 1_000_000
    assert message.sha256 == entry.sha256 == hashlib.sha256(stored).hexdigest()
    assert pq.read_table(io.BytesIO(stored)).num_rows == message.row_count

    event = envelope.new_event("validation", pb.curated_rows_to_pb(curated))
    assert len(envelope.encode(event)) < SMALL_MESSAGE


async def test_a_redelivered_batch_republishes_the_same_claim_check(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    [first] = await curate(pipeline(store, 0), noisy_rows("b1", 1000))
    [again] = await curate(pipeline(store, 0), noisy_rows("b1", 1000))  # a restarted validation
    assert again == first and again.byte_size == len(store.get(again.file_key))


async def test_inline_is_an_opt_in_bounded_by_its_limit(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    [small] = await curate(pipeline(store, 1 << 20), noisy_rows("b1", 100))
    assert small.parquet == store.get(small.file_key) and small.byte_size == len(small.parquet)
    assert hashlib.sha256(small.parquet).hexdigest() == small.sha256

    with capture_logs() as logs:
        [large] = await curate(pipeline(store, 4096), noisy_rows("b2", 10_000))
    assert large.parquet == b"" and large.byte_size == len(store.get(large.file_key)) > 4096
    [warning] = [e for e in logs if e["event"] == "curated_file_too_large_to_inline"]
    assert warning["limit"] == 4096 and warning["bytes"] == large.byte_size


def test_the_setting_is_read_from_the_environment_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_VALIDATION_VALIDATED_INLINE_MAX_BYTES", "900000")
    assert ValidationSettings().validated_inline_max_bytes == 900_000
    for wrong in ("-1", str(MAX_INLINE_BYTES + 1)):
        monkeypatch.setenv("DRIFTLOOP_VALIDATION_VALIDATED_INLINE_MAX_BYTES", wrong)
        with pytest.raises(ValidationError, match="validated_inline_max_bytes"):
            ValidationSettings()


@pytest.mark.parametrize("wrong", [-1, MAX_INLINE_PARQUET + 1])
def test_the_handler_refuses_an_inline_limit_no_message_can_carry(
    tmp_path: Path, wrong: int
) -> None:
    store = LocalObjectStore(tmp_path)
    publisher = EventPublisher("127.0.0.1:9", "test")  # never started: nothing is sent
    with pytest.raises(ValueError, match="must be 0 \\(references only\\)"):
        RecordBatchHandler(
            store,
            SchemaCatalog(store),
            QualityTracker(),
            publisher,
            max_inline_bytes=wrong,
        )
