"""Curated dataset manifests: immutable, versioned lists of Parquet files with their hashes.

Validation writes a new manifest version for every batch it curates; training pins one version
and reads exactly those files (verifying each SHA-256), so a run can be reproduced.

Object layout:
    curated/<dataset>/date=<YYYY-MM-DD>/<batch_id>.parquet
    manifests/<dataset>/v<00000001>.json     one per version, never rewritten
    manifests/<dataset>/latest.json          copy of the newest version
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

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
    min_ingested_at: float
    max_ingested_at: float


class DatasetManifest(BaseModel):
    dataset: str
    version: int
    created_at: float
    schema_hash: str
    files: list[ManifestFile]

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def key(self) -> str:
        return version_key(self.dataset, self.version)

    def has_batch(self, batch_id: str) -> bool:
        return any(f.batch_id == batch_id for f in self.files)


def version_key(dataset: str, version: int) -> str:
    return f"manifests/{check_name('dataset', dataset)}/v{version:08d}.json"


def latest_key(dataset: str) -> str:
    return f"manifests/{check_name('dataset', dataset)}/latest.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def latest_manifest(store: ObjectStore, dataset: str) -> DatasetManifest | None:
    try:
        return DatasetManifest.model_validate(json.loads(store.get(latest_key(dataset))))
    except NotFound:
        return None


def read_manifest(store: ObjectStore, dataset: str, version: int) -> DatasetManifest:
    return DatasetManifest.model_validate(json.loads(store.get(version_key(dataset, version))))


def curate_batch(
    store: ObjectStore, dataset: str, batch_id: str, table: pa.Table, schema_hash: str
) -> DatasetManifest:
    """Store accepted rows of one batch and publish a new manifest version that includes them.

    Idempotent by batch_id: a batch already in the latest manifest is not added again, and its
    Parquet key is derived from the batch id, so a re-delivered batch overwrites itself.
    """
    current = latest_manifest(store, dataset)
    if current is not None and current.has_batch(batch_id):
        return current
    ingested = table.column(INGESTED_AT).to_numpy() if INGESTED_AT in table.column_names else None
    first = float(ingested.min()) if ingested is not None and len(ingested) else time.time()
    last = float(ingested.max()) if ingested is not None and len(ingested) else first
    day = time.strftime("%Y-%m-%d", time.gmtime(first))
    key = f"curated/{check_name('dataset', dataset)}/date={day}/{batch_id}.parquet"
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    store.put(key, data)
    files = list(current.files) if current else []
    files.append(
        ManifestFile(
            key=key,
            sha256=sha256(data),
            rows=table.num_rows,
            batch_id=batch_id,
            min_ingested_at=first,
            max_ingested_at=last,
        )
    )
    manifest = DatasetManifest(
        dataset=dataset,
        version=(current.version + 1) if current else 1,
        created_at=time.time(),
        schema_hash=schema_hash,
        files=files,
    )
    body = manifest.model_dump_json(indent=None).encode()
    store.put(manifest.key, body)
    store.put(latest_key(dataset), body)
    return manifest


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
