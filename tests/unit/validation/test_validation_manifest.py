"""Incremental manifests: coalesced files, delta versions with periodic snapshots, exactly-once
by batch id, rejected-row accounting, and reading manifests written by older driftloop."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop.services.validation.core.curation import CuratedPart, ManifestWriter, curate_batch
from driftloop.shared.manifest import (
    latest_key,
    latest_manifest,
    manifest_head,
    read_manifest,
    read_snapshot,
    version_key,
)
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def part(batch_id: str, start: int, rows: int, rejected: int = 0) -> CuratedPart:
    ids = list(range(start, start + rows))
    table = pa.table({"id": ids, "_ingested_at": [1000.0 + i for i in ids]})
    return CuratedPart(batch_id, table, rejected)


def test_one_poll_becomes_one_file_and_one_version(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    writer = ManifestWriter(store)
    done = writer.curate("d", [part("a", 0, 3), part("b", 3, 2, 1)], "h")
    manifest = done.manifest
    assert manifest is not None and done.fresh == ["a", "b"]
    [only] = manifest.files
    assert only.batch_ids == ["a", "b"] and only.rows == 5 and only.batch_id == "a"
    assert only.batch_rows == [3, 2]
    assert (manifest.version, manifest.rows_rejected, manifest.rows_in) == (1, 1, 6)
    assert len(store.list("curated/d/")) == 1
    [written] = done.files
    assert written.entry == only and written.data == store.get(only.key)
    assert pq.read_table(io.BytesIO(written.data))["id"].to_pylist() == [0, 1, 2, 3, 4]
    again = writer.curate("d", [part("b", 3, 2, 1), part("c", 5, 0, 4)], "h")
    assert again.fresh == ["c"] and again.manifest is not None and again.manifest.version == 2
    assert again.manifest.files == manifest.files, "an all-rejected batch adds no file"
    assert again.files == []
    assert again.manifest.rejected_batches == ["c"] and again.manifest.rows_in == 10
    assert all(again.manifest.has_batch(b) for b in "abc")
    assert not again.manifest.has_batch("z")
    same = ManifestWriter(store).curate("d", [part("a", 0, 3), part("c", 5, 0, 4)], "h")
    assert same.fresh == [] and same.files == [], "re-delivery adds nothing"
    assert same.manifest is not None and same.manifest.version == 2
    assert same.manifest.files_holding(["c", "b"]) == [only]
    assert same.manifest.files_holding(["c"]) == []


def test_a_large_poll_is_split_into_files_that_fit_a_message(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    parts = [part(f"b{i}", i * 100, 100) for i in range(5)]
    per_part = parts[0].accepted.nbytes
    writer = ManifestWriter(store, max_file_bytes=2 * per_part)
    done = writer.curate("d", parts, "h")
    assert done.manifest is not None and done.manifest.version == 1, "still one version"
    assert [f.entry.batch_ids for f in done.files] == [["b0", "b1"], ["b2", "b3"], ["b4"]]
    assert done.manifest.files == [f.entry for f in done.files]
    assert read_snapshot(store, done.manifest)["id"].tolist() == list(range(500))
    big = part("huge", 1000, 1000)
    [alone] = writer.curate("d", [big], "h").files
    assert alone.entry.batch_ids == ["huge"], "a batch over the limit still gets its file"


def test_versions_are_deltas_on_snapshots_and_every_version_reads_back(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    writer = ManifestWriter(store, snapshot_every=4)
    for v in range(1, 23):
        writer.curate("d", [part(f"b{v}", v * 10, 10)], "h")
    sizes = [len(store.get(version_key("d", v))) for v in range(1, 23)]
    formats = [json.loads(store.get(version_key("d", v)))["format"] for v in range(1, 23)]
    assert formats.count("full") >= 5 and formats.count("delta") >= 10
    deltas = [s for s, f in zip(sizes, formats, strict=True) if f == "delta"]
    assert max(deltas) < 4 * min(sizes[:1]) * 2, "a delta stays small however many versions"
    assert len(store.get(latest_key("d"))) < 400, "latest.json is a small pointer"
    for v in range(1, 23):
        m = read_manifest(store, "d", v)
        assert [f.batch_id for f in m.files] == [f"b{i}" for i in range(1, v + 1)]
    head = manifest_head(store, "d")
    assert head is not None and (head.version, head.total_rows, head.file_count) == (22, 220, 22)
    latest = latest_manifest(store, "d")
    assert latest is not None
    assert read_snapshot(store, latest)["id"].tolist() == list(range(10, 230))
    recent = read_snapshot(store, latest, since=1000.0 + 215)
    assert recent["id"].tolist() == list(range(215, 230))


def test_a_second_writer_continues_where_the_store_is(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    first, second = ManifestWriter(store, snapshot_every=3), ManifestWriter(store)
    first.curate("d", [part("a", 0, 1)], "h")
    first.curate("d", [part("b", 1, 1)], "h")
    second.curate("d", [part("c", 2, 1)], "h")
    done = first.curate("d", [part("c", 2, 1), part("e", 3, 1)], "h")
    m = done.manifest
    assert done.fresh == ["e"] and m is not None and m.version == 4 and m.total_rows == 4
    assert [f.batch_id for f in read_manifest(store, "d", 4).files] == ["a", "b", "c", "e"]


def test_manifests_written_by_the_old_layout_still_read_and_extend(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    old = {
        "dataset": "d",
        "version": 1,
        "created_at": 1.0,
        "schema_hash": "h",
        "files": [
            {
                "key": "curated/d/x.parquet",
                "sha256": "0" * 64,
                "rows": 7,
                "batch_id": "old",
                "min_ingested_at": 1.0,
                "max_ingested_at": 2.0,
            }
        ],
    }
    for key in (version_key("d", 1), latest_key("d")):
        store.put(key, json.dumps(old).encode())
    m = latest_manifest(store, "d")
    assert m is not None and m.total_rows == 7 and m.has_batch("old")
    m2 = curate_batch(store, "d", "old", pa.table({"id": [1]}), "h")
    assert m2.version == 1, "a batch of the old layout is recognised"
    m3 = curate_batch(store, "d", "new", pa.table({"id": [1]}), "h")
    assert m3.version == 2 and m3.total_rows == 8
    assert read_manifest(store, "d", 2).files[0].batch_id == "old"
