"""The validation pipeline without a broker: a poll's batches are checked, counted and curated,
and come back as what to publish (files, rejected rows, one version per run) with their causes;
redelivered batches republish their files; unique keys span polls; failures drop the keys."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.catalog import SchemaCatalog, schema_key
from driftloop.services.validation.core.key_catalog import KeyCatalog
from driftloop.services.validation.core.outcomes import RunOutcome
from driftloop.services.validation.core.pipeline import RawBatch, ValidationPipeline
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.schema import ColumnSpec
from driftloop.shared.errors import InvalidInput
from driftloop.shared.manifest import latest_manifest
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit

LIMIT = 1 << 20


class ForgettingKeys(KeyCatalog):
    """A real key catalog that counts how often its indexes were dropped."""

    forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1
        super().forget()


def pipeline(
    tmp_path: Path, *, max_inline_bytes: int = LIMIT
) -> tuple[ValidationPipeline, LocalObjectStore, QualityTracker, ForgettingKeys]:
    store = LocalObjectStore(tmp_path)
    catalog = SchemaCatalog(store, cache_seconds=0)
    quality = QualityTracker()
    keys = ForgettingKeys(store)
    built = ValidationPipeline(
        store, catalog, quality, keys=keys, max_inline_bytes=max_inline_bytes
    )
    return built, store, quality, keys


def declare(store: LocalObjectStore, dataset: str, *columns: ColumnSpec) -> None:
    SchemaCatalog(store).put(schemas.declare(dataset, list(columns)))


def raw(dataset: str, batch_id: str, **columns: list[object]) -> RawBatch:
    return RawBatch(dataset, batch_id, pa.table(columns), "grpc")


async def validate(pipe: ValidationPipeline, *batches: RawBatch) -> list[RunOutcome]:
    return await pipe.curate(await pipe.check(list(batches)))


async def test_a_poll_yields_files_rejections_and_a_version_per_run(tmp_path: Path) -> None:
    pipe, store, quality, _ = pipeline(tmp_path)
    declare(store, "d", ColumnSpec("x", "int", min=0))
    declare(store, "e", ColumnSpec("y", "string"))
    runs = await validate(
        pipe,
        raw("d", "b1", x=[1, -1, 2]),
        raw("d", "b2", x=[3]),
        raw("e", "b3", y=["a"]),
        raw("d", "b4", x=[-5]),
    )
    assert len(runs) == 3, "consecutive batches of one dataset and schema make one run"

    [curated] = runs[0].files
    head = latest_manifest(store, "d")
    assert head is not None
    assert [(b.batch_id, b.rows, b.source) for b in curated.batches] == [
        ("b1", 2, "grpc"),
        ("b2", 1, "grpc"),
    ]
    assert (curated.dataset, curated.row_count, curated.cause) == ("d", 3, 0)
    assert curated.sha256 == hashlib.sha256(curated.parquet).hexdigest()
    assert curated.parquet == store.get(curated.file_key)
    assert pq.read_table(io.BytesIO(curated.parquet))["x"].to_pylist() == [1, 2, 3]
    assert curated.schema_hash == SchemaCatalog(store).get("d").schema_hash

    first, second = runs[0].batches
    assert (first.accepted_rows, first.rejected_rows, second.rejected) == (2, 1, None)
    assert first.rejected is not None and first.rejected.cause == 0
    [row] = first.rejected.rows
    assert row.row_index == 1 and "below the minimum 0" in row.reason
    assert json.loads(row.row_json) == {"x": -1}
    version = runs[0].version
    assert version is not None and version.cause == 1, "caused by the run's last batch"
    assert (version.dataset, version.manifest_version, version.total_rows) == ("d", 1, 3)

    assert runs[1].version is not None and runs[1].version.cause == 2
    last = runs[2]
    assert last.files == () and last.version is None, "a run with no accepted row: no version"
    assert last.batches[0].rejected is not None and last.batches[0].rejected.cause == 3
    head = latest_manifest(store, "d")
    assert head is not None and (head.version, head.rows_rejected) == (2, 2)
    counted = quality.get("d")
    assert counted is not None and (counted.rows_accepted, counted.rows_rejected) == (3, 2)


async def test_a_redelivered_batch_republishes_the_file_that_holds_it(tmp_path: Path) -> None:
    pipe, store, quality, _ = pipeline(tmp_path)
    [run] = await validate(pipe, raw("d", "b1", x=[1.0, 2.0]))
    again, *_ = pipeline(tmp_path)  # a restarted validation: nothing in memory
    [rerun] = await validate(again, raw("d", "b1", x=[1.0, 2.0]))
    assert [f.file_key for f in rerun.files] == [f.file_key for f in run.files]
    assert rerun.files[0].parquet == run.files[0].parquet
    assert rerun.version is not None and rerun.version.manifest_version == 1, "no new version"
    [dup] = await validate(pipe, raw("d", "b1", x=[1.0, 2.0]))
    assert len(dup.files) == 1
    counted = quality.get("d")
    assert counted is not None and counted.batches == 1, "a batch is counted once"


async def test_a_file_over_the_inline_limit_travels_by_reference(tmp_path: Path) -> None:
    pipe, store, _, _ = pipeline(tmp_path, max_inline_bytes=0)
    [run] = await validate(pipe, raw("d", "b1", x=[1.0]))
    [curated] = run.files
    assert curated.parquet == b"" and curated.row_count == 1
    assert hashlib.sha256(store.get(curated.file_key)).hexdigest() == curated.sha256


def keyed(store: LocalObjectStore) -> None:
    declare(store, "k", ColumnSpec("id", "string", unique=True))


async def test_unique_keys_wait_for_the_previous_poll_and_span_polls(tmp_path: Path) -> None:
    pipe, store, _, _ = pipeline(tmp_path)
    keyed(store)
    first = await pipe.check([raw("k", "b1", id=["a", "b"])])
    previous: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    curating = asyncio.create_task(pipe.curate(first, after=previous))
    checking = asyncio.create_task(pipe.check([raw("k", "b2", id=["b", "c"])]))
    await asyncio.sleep(0)  # poll: one deterministic yield; the check must be waiting
    assert not checking.done(), "a keyed check waits until earlier polls are curated"
    previous.set_result(None)
    await curating
    second = await asyncio.wait_for(checking, 30)
    [rejection] = second[0].verdict.rejections
    assert rejection.reason == "duplicate key id='b'"
    await pipe.curate(second)


async def test_a_failed_check_drops_the_keys_and_counts_nothing(tmp_path: Path) -> None:
    pipe, store, quality, keys = pipeline(tmp_path)
    keyed(store)
    store.put(schema_key("broken"), b"{nope")
    with pytest.raises(InvalidInput, match="not a readable schema"):
        await pipe.check([raw("k", "b1", id=["a"]), raw("broken", "b2", x=[1])])
    assert keys.forgotten == 1 and quality.get("k") is None
    [run] = await validate(pipe, raw("k", "b1", id=["a"]))
    assert run.batches[0].rejected is None and run.version is not None


async def test_a_failed_curation_drops_the_keys_and_frees_later_checks(tmp_path: Path) -> None:
    pipe, store, _, keys = pipeline(tmp_path)
    keyed(store)
    checked = await pipe.check([raw("k", "b1", id=["a"])])
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("the previous poll failed"))
    with pytest.raises(RuntimeError, match="previous poll"):
        await pipe.curate(checked, after=failed)
    # a keyed check waits for earlier polls to be curated: a failed poll must not block it
    later = await asyncio.wait_for(pipe.check([raw("k", "b2", id=["q"])]), 30)
    assert later[0].verdict.accepted_rows == 1
    assert keys.forgotten == 0, "only a failing curation itself drops the keys"
    store_fails = ValidationPipeline(
        BrokenStore(tmp_path),
        SchemaCatalog(store),
        QualityTracker(),
        keys=keys,
        max_inline_bytes=LIMIT,
    )
    doomed = await store_fails.check([raw("k", "b3", id=["z"])])
    with pytest.raises(OSError, match="disk full"):
        await store_fails.curate(doomed)
    assert keys.forgotten == 1


class BrokenStore(LocalObjectStore):
    """A local store whose writes fail."""

    def put(self, key: str, data: bytes) -> None:
        raise OSError("disk full")
