"""Curated dataset manifests: immutable, versioned lists of Parquet files with their hashes.

Validation curates the accepted rows of one or more raw batches into one Parquet file and
publishes a new manifest version that adds it; training pins one version and reads exactly
those files (verifying each SHA-256), so a run can be reproduced.

Versions are stored incrementally, so a write costs O(new files), not O(all files):

    curated/<dataset>/date=<YYYY-MM-DD>/<first batch id>.parquet
    manifests/<dataset>/v<00000001>.json   version N, never rewritten: either a full snapshot
                                           ("format": "full", every file) or a delta
                                           ("format": "delta": the full snapshot version it
                                           builds on plus every file added since), so reading
                                           any version takes at most two objects
    manifests/<dataset>/latest.json        small pointer to the head version (with totals)

Each file lists the batch ids whose rows it holds, and each version counts the rows rejected so
far and the batches that had no accepted row, so re-delivered batches are recognised (exactly
once) and rows in = curated rows + rejected rows can be read back from the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, PrivateAttr

from driftloop.shared.errors import ArtifactRejected, NotFound
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore

INGESTED_AT = "_ingested_at"
"""Column ingestion adds to every row: epoch seconds when the row was accepted."""
SNAPSHOT_EVERY = 64
"""A version is written as a full snapshot once its delta would hold this many entries."""
PARQUET_COMPRESSION = "zstd"
MAX_FILE_BYTES = 12 * 1024 * 1024
"""A curated file holds batches of at most this many bytes of Arrow data (a single batch may be
larger): its Parquet bytes then fit in one Kafka message on driftloop.records.validated."""


class ManifestFile(BaseModel):
    key: str
    sha256: str
    rows: int
    batch_id: str
    """The first batch whose rows this file holds (also its file name)."""
    min_ingested_at: float
    max_ingested_at: float
    batch_ids: list[str] = []
    """Every batch whose accepted rows this file holds (empty in old manifests: batch_id)."""
    batch_rows: list[int] = []
    """Accepted rows of each of `batch_ids`, same order (empty in older manifests)."""

    def all_batch_ids(self) -> list[str]:
        return self.batch_ids or [self.batch_id]


class DatasetManifest(BaseModel):
    dataset: str
    version: int
    created_at: float
    schema_hash: str
    files: list[ManifestFile]
    rows_rejected: int = 0
    """Rows rejected by validation in every batch this version accounts for."""
    rejected_batches: list[str] = []
    """Batches none of whose rows were accepted (so they have no file)."""
    _batch_set: set[str] | None = PrivateAttr(default=None)

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rows_in(self) -> int:
        """Rows of every accounted batch: curated + rejected."""
        return self.total_rows + self.rows_rejected

    @property
    def key(self) -> str:
        return version_key(self.dataset, self.version)

    def files_holding(self, batch_ids: list[str]) -> list[ManifestFile]:
        """The files holding accepted rows of any of `batch_ids`, in manifest order."""
        wanted = set(batch_ids)
        if not wanted:  # the usual case, every poll: no scan of a long file list
            return []
        return [f for f in self.files if wanted.intersection(f.all_batch_ids())]

    def has_batch(self, batch_id: str) -> bool:
        if self._batch_set is None:
            found = {b for f in self.files for b in f.all_batch_ids()}
            self._batch_set = found | set(self.rejected_batches)
        return batch_id in self._batch_set


@dataclass(frozen=True)
class ManifestHead:
    """What latest.json says about the head version, without reading the file list."""

    dataset: str
    version: int
    total_rows: int
    rows_rejected: int
    file_count: int
    schema_hash: str


def version_key(dataset: str, version: int) -> str:
    return f"manifests/{check_name('dataset', dataset)}/v{version:08d}.json"


def latest_key(dataset: str) -> str:
    return f"manifests/{check_name('dataset', dataset)}/latest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(store: ObjectStore, key: str) -> dict[str, Any]:
    return json.loads(store.get(key))  # type: ignore[no-any-return]


def manifest_head(store: ObjectStore, dataset: str) -> ManifestHead | None:
    """The head version's totals (one small read), or None when nothing was curated yet."""
    try:
        doc = _load(store, latest_key(dataset))
    except NotFound:
        return None
    if doc.get("format") != "pointer":  # a full manifest written by an older driftloop
        m = DatasetManifest.model_validate(doc)
        return ManifestHead(
            m.dataset, m.version, m.total_rows, m.rows_rejected, len(m.files), m.schema_hash
        )
    return ManifestHead(
        doc["dataset"],
        int(doc["version"]),
        int(doc["total_rows"]),
        int(doc.get("rows_rejected", 0)),
        int(doc["file_count"]),
        doc["schema_hash"],
    )


def latest_manifest(store: ObjectStore, dataset: str) -> DatasetManifest | None:
    head = manifest_head(store, dataset)
    return None if head is None else read_manifest(store, dataset, head.version)


def read_manifest(store: ObjectStore, dataset: str, version: int) -> DatasetManifest:
    doc = _load(store, version_key(dataset, version))
    if doc.get("format") != "delta":
        return DatasetManifest.model_validate(doc)
    base = _load(store, version_key(dataset, int(doc["snapshot_version"])))
    doc["files"] = base["files"] + doc["files"]
    doc["rejected_batches"] = base.get("rejected_batches", []) + doc["rejected_batches"]
    return DatasetManifest.model_validate(doc)


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
        doc = _load(self._store, version_key(dataset, on_store.version))
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


def read_snapshot(
    store: ObjectStore, manifest: DatasetManifest, *, since: float | None = None
) -> pd.DataFrame:
    """Load the rows a manifest pins (optionally only files with rows ingested at/after `since`),
    verifying every file's SHA-256. Rows come back ordered by ingestion time."""
    frames = []
    for f in manifest.files:
        if since is not None and f.max_ingested_at < since:
            continue
        data = store.get(f.key)
        if sha256(data) != f.sha256:
            raise ArtifactRejected(
                f"curated file {f.key} does not match its manifest hash: the data was altered"
            )
        frames.append(pq.read_table(io.BytesIO(data)).to_pandas())
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    if since is not None and INGESTED_AT in df.columns:
        df = df[df[INGESTED_AT] >= since]
    if INGESTED_AT in df.columns:
        df = df.sort_values(INGESTED_AT, kind="stable")
    return df.reset_index(drop=True)
