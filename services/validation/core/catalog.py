"""Where validation keeps its durable state in the object store: each dataset's schema
(`schemas/<dataset>.json`) and, through driftloop.shared.manifest, its curated versions.

Blocking (object store I/O): call it from async code through asyncio.to_thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import structlog

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.schema import ColumnSpec, DatasetSchema
from driftloop.shared.errors import NotFound
from driftloop.shared.manifest import manifest_head
from driftloop.shared.names import check_name
from driftloop.shared.objectstore import ObjectStore

log = structlog.get_logger(__name__)

SCHEMAS_PREFIX = "schemas/"
MANIFESTS_PREFIX = "manifests/"


def schema_key(dataset: str) -> str:
    return f"{SCHEMAS_PREFIX}{check_name('dataset', dataset)}.json"


@dataclass(frozen=True)
class DatasetSummary:
    dataset: str
    manifest_version: int
    curated_rows: int
    rows_rejected: int = 0
    """Rows rejected so far, as the head manifest version accounts them (durable)."""


class SchemaCatalog:
    """Schemas by dataset, cached for `cache_seconds` (another replica may declare one)."""

    def __init__(self, store: ObjectStore, *, cache_seconds: float = 5.0) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, DatasetSchema]] = {}
        self._lock = threading.Lock()

    def get(self, dataset: str) -> DatasetSchema:
        """The dataset's schema; NotFound when it has none yet."""
        cached = self._cache.get(dataset)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            data = self._store.get(schema_key(dataset))
        except NotFound as exc:
            raise NotFound(
                f"dataset {dataset!r} has no schema: declare one or ingest rows"
            ) from exc
        schema = DatasetSchema.from_json(data)
        self._cache[dataset] = (time.monotonic(), schema)
        return schema

    def put(self, schema: DatasetSchema) -> DatasetSchema:
        self._store.put(schema_key(schema.dataset), schema.to_json())
        self._cache[schema.dataset] = (time.monotonic(), schema)
        log.info(
            "schema_stored",
            dataset=schema.dataset,
            origin=schema.origin,
            schema_hash=schema.schema_hash,
            columns=len(schema.columns),
        )
        return schema

    def declare(
        self, dataset: str, columns: list[ColumnSpec], *, breaking: bool = False
    ) -> DatasetSchema:
        """Store an operator's schema for `dataset`. It replaces the current one only if the
        change is compatible or declared `breaking`; Conflict otherwise, saying why."""
        declared = schemas.declare(dataset, columns)
        try:
            current = self.get(declared.dataset)
        except NotFound:
            current = None
        if current is not None:
            schemas.check_evolution(current, declared, breaking=breaking)
        return self.put(declared)

    def for_batch(self, dataset: str, table: pa.Table) -> DatasetSchema:
        """The dataset's schema, inferring and pinning one from `table` if it has none."""
        with self._lock:  # two first batches at once must not pin two schemas
            try:
                return self.get(dataset)
            except NotFound:
                return self.put(schemas.infer(dataset, table))

    def grow(self, schema: DatasetSchema, accepted: pa.Table) -> DatasetSchema | None:
        """An inferred schema grown by the new columns of rows it accepted (pinned), or None:
        only accepted rows shape an inferred schema, and a declared one changes only by
        declaration."""
        if schema.origin != "inferred":
            return None
        with self._lock:
            current = self.get(schema.dataset)
            if current.schema_hash != schema.schema_hash:
                return None  # grown meanwhile; the next poll sees it
            grown = schemas.with_new_columns(current, accepted)
            return None if grown is None else self.put(grown)

    def datasets(self) -> list[str]:
        """Every dataset that has a schema or a manifest."""
        names = {
            key[len(SCHEMAS_PREFIX) : -len(".json")]
            for key in self._store.list(SCHEMAS_PREFIX)
            if key.endswith(".json")
        }
        names |= {
            key.split("/")[1]
            for key in self._store.list(MANIFESTS_PREFIX)
            if key.endswith("/latest.json") and key.count("/") == 2
        }
        return sorted(names)

    def summaries(self) -> list[DatasetSummary]:
        """A summary of every dataset (see `datasets`)."""
        return [self.summary(dataset) for dataset in self.datasets()]

    def summary(self, dataset: str) -> DatasetSummary:
        head = manifest_head(self._store, dataset)
        if head is None:
            return DatasetSummary(dataset, 0, 0)
        return DatasetSummary(dataset, head.version, head.total_rows, head.rows_rejected)

    def knows(self, dataset: str) -> bool:
        check_name("dataset", dataset)
        return (
            self._store.exists(schema_key(dataset))
            or manifest_head(self._store, dataset) is not None
        )
