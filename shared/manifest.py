"""Curated dataset manifests: immutable, versioned lists of Parquet files with their hashes.

Validation curates the accepted rows of one or more raw batches into Parquet files and
publishes a new manifest version that adds them (driftloop.services.validation.core.curation);
training pins one version and reads exactly those files (verifying each SHA-256), so a run
can be reproduced. This module holds the manifest model and its readers.

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
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, PrivateAttr

from driftloop.shared.errors import ArtifactRejected, NotFound
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore

INGESTED_AT = "_ingested_at"
"""Column ingestion adds to every row: epoch seconds when the row was accepted."""


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


def read_json(store: ObjectStore, key: str) -> dict[str, Any]:
    return json.loads(store.get(key))  # type: ignore[no-any-return]


def manifest_head(store: ObjectStore, dataset: str) -> ManifestHead | None:
    """The head version's totals (one small read), or None when nothing was curated yet."""
    try:
        doc = read_json(store, latest_key(dataset))
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
    doc = read_json(store, version_key(dataset, version))
    if doc.get("format") != "delta":
        return DatasetManifest.model_validate(doc)
    base = read_json(store, version_key(dataset, int(doc["snapshot_version"])))
    doc["files"] = base["files"] + doc["files"]
    doc["rejected_batches"] = base.get("rejected_batches", []) + doc["rejected_batches"]
    return DatasetManifest.model_validate(doc)


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
