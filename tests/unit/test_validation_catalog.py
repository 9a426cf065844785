"""The schema catalog on a local object store: pin an inferred schema once, declare, list."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from driftloop.services.validation import schema as schemas
from driftloop.services.validation.catalog import SchemaCatalog, schema_key
from driftloop.services.validation.schema import ColumnSpec
from driftloop.shared.errors import NotFound
from driftloop.shared.manifest import curate_batch
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def test_first_batch_pins_an_inferred_schema(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = SchemaCatalog(store, cache_seconds=0)
    with pytest.raises(NotFound, match="no schema"):
        catalog.get("d")
    first = catalog.for_batch("d", pa.table({"x": [1, 2]}))
    assert first.origin == "inferred" and store.exists(schema_key("d"))
    second = catalog.for_batch("d", pa.table({"x": ["text"], "y": [1.0]}))
    assert second == first, "a pinned schema is not re-inferred"


def test_declared_schema_replaces_and_is_listed_with_manifest_counts(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = SchemaCatalog(store, cache_seconds=60)
    catalog.for_batch("d", pa.table({"x": [1]}))
    declared = catalog.put(schemas.declare("d", [ColumnSpec("x", "float", min=0)]))
    assert SchemaCatalog(store).get("d") == declared
    curate_batch(store, "other", "b1", pa.table({"v": [1, 2, 3]}), "h")
    assert catalog.datasets() == ["d", "other"]
    summary = catalog.summary("other")
    assert (summary.manifest_version, summary.curated_rows) == (1, 3)
    assert catalog.summary("d").manifest_version == 0
    assert catalog.knows("other") and catalog.knows("d") and not catalog.knows("nope")
