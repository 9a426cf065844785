"""Curation: the accepted rows of validated batches become Parquet files and a new manifest
version (the layout is described in driftloop.shared.manifest)."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftloop.shared.manifest import (
    INGESTED_AT,
    DatasetManifest,
    ManifestFile,
    latest_key,
    manifest_head,
    read_json,
    read_manifest,
    sha256,
    version_key,
)
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore

SNAPSHOT_EVERY = 64
"""A version is written as a full snapshot once its delta would hold this many entries."""
PARQUET_COMPRESSION = "zstd"
MAX_FILE_BYTES = 12 * 1024 * 1024
"""A curated file holds batches of at most this many bytes of Arrow data (a single batch may be
larger): its Parquet bytes then fit in one Kafka message on driftloop.records.validated."""


@dataclass(frozen=True)
class CuratedPart:
    """The outcome of validating one raw batch: its accepted rows and how many were rejected."""

    batch_id: str
    accepted: pa.Table
    rejected_rows: int = 0


@dataclass(frozen=True)
class CuratedFile:
    """A file one curate call wrote: its manifest entry and its Parquet bytes."""

    entry: ManifestFile
    data: bytes


@dataclass(frozen=True)
class Curation:
    """What one ManifestWriter.curate call did."""

    manifest: DatasetManifest | None
    """The head version afterwards (None if nothing was ever curated)."""
    fresh: list[str]
    """Ids of the parts that were new (the others were already curated)."""
    files: list[CuratedFile] = field(default_factory=list)
    """The files written, in order."""


@dataclass
class _Head:
    manifest: DatasetManifest
    snapshot_version: int
    delta_files: list[ManifestFile] = field(default_factory=list)
    delta_rejected: list[str] = field(default_factory=list)


class ManifestWriter:
    """Curates batches of datasets into one store, keeping each dataset's head in memory.

    One writer per dataset at a time (validation's consumer group assigns each dataset's
    partition to one member); the head is re-read whenever latest.json moved underneath.
    Blocking (object store I/O): call it from async code through asyncio.to_thread.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        snapshot_every: int = SNAPSHOT_EVERY,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self._store = store
        self._snapshot_every = snapshot_every
        self._max_file_bytes = max_file_bytes
        self._heads: dict[str, _Head] = {}

    def head(self, dataset: str) -> DatasetManifest | None:
        state = self._head(dataset)
        return None if state is None else state.manifest

    def _head(self, dataset: str) -> _Head | None:
        on_store = manifest_head(self._store, dataset)
        cached = self._heads.get(dataset)
        if on_store is None:
            self._heads.pop(dataset, None)
            return None
        if cached is not None and cached.manifest.version == on_store.version:
            return cached
        manifest = read_manifest(self._store, dataset, on_store.version)
        doc = read_json(self._store, version_key(dataset, on_store.version))
        state = _Head(manifest, manifest.version)
        if doc.get("format") == "delta":
            state.snapshot_version = int(doc["snapshot_version"])
            state.delta_files = [ManifestFile.model_validate(f) for f in doc["files"]]
            state.delta_rejected = list(doc["rejected_batches"])
        self._heads[dataset] = state
        return state

    def curate(self, dataset: str, parts: list[CuratedPart], schema_hash: str) -> Curation:
        """Store the accepted rows of `parts` (batches of one dataset, same schema) as Parquet
        files and publish one new version that accounts for all of them. Consecutive parts
        share a file up to `max_file_bytes` of Arrow data (so usually one file per call).

        Idempotent by batch id: parts already in the head version are skipped.
        """
        check_name("dataset", dataset)
        state = self._head(dataset)
        fresh = [p for p in parts if state is None or not state.manifest.has_batch(p.batch_id)]
        fresh = list({p.batch_id: p for p in fresh}.values())  # a poll may repeat a batch
        if not fresh:
            return Curation(None if state is None else state.manifest, [])
        with_rows = [p for p in fresh if p.accepted.num_rows]
        files = [self._write_file(dataset, group) for group in self._file_groups(with_rows)]
        rejected_only = [p.batch_id for p in fresh if not p.accepted.num_rows]
        rejected = sum(p.rejected_rows for p in fresh)
        entries = [f.entry for f in files]
        manifest = self._publish(dataset, state, entries, rejected_only, rejected, schema_hash)
        return Curation(manifest, [p.batch_id for p in fresh], files)

    def _file_groups(self, parts: list[CuratedPart]) -> list[list[CuratedPart]]:
        groups: list[list[CuratedPart]] = []
        size = 0
        for part in parts:
            nbytes = part.accepted.nbytes
            if not groups or size + nbytes > self._max_file_bytes:
                groups.append([])
                size = 0
            groups[-1].append(part)
            size += nbytes
        return groups

    def _write_file(self, dataset: str, parts: list[CuratedPart]) -> CuratedFile:
        table = pa.concat_tables([p.accepted for p in parts])
        if INGESTED_AT in table.column_names:
            stamps = table.column(INGESTED_AT)
            first = float(pc.min(stamps).as_py())
            last = float(pc.max(stamps).as_py())
        else:
            first = last = time.time()
        day = time.strftime("%Y-%m-%d", time.gmtime(first))
        key = f"curated/{dataset}/date={day}/{parts[0].batch_id}.parquet"
        buf = io.BytesIO()
        # why: dictionary encoding pays off for strings; on numbers it costs more time than
        # it saves space, and zstd level 1 is ~3x faster than the default at a similar size.
        # Integers are delta-encoded (DELTA_BINARY_PACKED: ~2x faster to write than plain +
        # zstd, and smaller). Column statistics (min/max per page and row group) cost ~15 % of
        # the write; only the ingestion time gets them (every reader here reads whole files).
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        ints = [f.name for f in table.schema if pa.types.is_integer(f.type)]
        pq.write_table(
            table,
            buf,
            compression=PARQUET_COMPRESSION,
            compression_level=1,
            use_dictionary=strings,
            column_encoding=dict.fromkeys(ints, "DELTA_BINARY_PACKED"),
            write_statistics=[INGESTED_AT] if INGESTED_AT in table.column_names else False,
            row_group_size=1 << 20,
        )
        data = buf.getvalue()
        self._store.put(key, data)
        entry = ManifestFile(
            key=key,
            sha256=sha256(data),
            rows=table.num_rows,
            batch_id=parts[0].batch_id,
            min_ingested_at=first,
            max_ingested_at=last,
            batch_ids=[p.batch_id for p in parts],
            batch_rows=[p.accepted.num_rows for p in parts],
        )
        return CuratedFile(entry, data)

    def _publish(
        self,
        dataset: str,
        state: _Head | None,
        new_files: list[ManifestFile],
        rejected_only: list[str],
        rejected: int,
        schema_hash: str,
    ) -> DatasetManifest:
        previous = None if state is None else state.manifest
        manifest = DatasetManifest.model_construct(
            dataset=dataset,
            version=1 if previous is None else previous.version + 1,
            created_at=time.time(),
            schema_hash=schema_hash,
            files=(previous.files if previous else []) + new_files,
            rows_rejected=(previous.rows_rejected if previous else 0) + rejected,
            rejected_batches=(previous.rejected_batches if previous else []) + rejected_only,
        )
        delta_files = (state.delta_files if state else []) + new_files
        delta_rejected = (state.delta_rejected if state else []) + rejected_only
        full = state is None or len(delta_files) + len(delta_rejected) >= self._snapshot_every
        if previous is not None and previous._batch_set is not None:
            manifest._batch_set = (
                previous._batch_set
                | {b for f in new_files for b in f.all_batch_ids()}
                | set(rejected_only)
            )
        body: dict[str, Any] = {
            "dataset": dataset,
            "version": manifest.version,
            "created_at": manifest.created_at,
            "schema_hash": schema_hash,
            "rows_rejected": manifest.rows_rejected,
        }
        if full:
            body.update(
                format="full",
                files=[f.model_dump() for f in manifest.files],
                rejected_batches=manifest.rejected_batches,
            )
            new_state = _Head(manifest, manifest.version)
        else:
            assert state is not None
            body.update(
                format="delta",
                snapshot_version=state.snapshot_version,
                files=[f.model_dump() for f in delta_files],
                rejected_batches=delta_rejected,
            )
            new_state = _Head(manifest, state.snapshot_version, delta_files, delta_rejected)
        self._store.put(manifest.key, json.dumps(body, separators=(",", ":")).encode())
        pointer = {
            "format": "pointer",
            "dataset": dataset,
            "version": manifest.version,
            "key": manifest.key,
            "total_rows": manifest.total_rows,
            "rows_rejected": manifest.rows_rejected,
            "file_count": len(manifest.files),
            "schema_hash": schema_hash,
            "created_at": manifest.created_at,
        }
        self._store.put(latest_key(dataset), json.dumps(pointer).encode())
        self._heads[dataset] = new_state
        return manifest


def curate_batch(
    store: ObjectStore, dataset: str, batch_id: str, table: pa.Table, schema_hash: str
) -> DatasetManifest:
    """Store accepted rows of one batch and publish a new manifest version that includes them.

    Idempotent by batch_id: a batch already in the latest manifest is not added again.
    """
    done = ManifestWriter(store).curate(dataset, [CuratedPart(batch_id, table)], schema_hash)
    assert done.manifest is not None
    return done.manifest
