"""The schema catalog on a local object store: pin an inferred schema once, declare (compatible
changes only unless breaking), list, and the quality report joining durable and live counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.batch_checks import BatchFlag
from driftloop.services.validation.core.catalog import SchemaCatalog, schema_key
from driftloop.services.validation.core.checks import check_batch
from driftloop.services.validation.core.curation import curate_batch
from driftloop.services.validation.core.quality import QualityTracker
from driftloop.services.validation.core.report import quality_report
from driftloop.services.validation.core.schema import ColumnSpec
from driftloop.shared.errors import Conflict, InvalidInput, NotFound
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def test_first_batch_pins_an_inferred_schema(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog = SchemaCatalog(store, cache_seconds=0)
    with pytest.raises(NotFound, match="no schema"):
        catalog.get("d")
    first = catalog.for_batch("d", pa.table({"x": [1, 2]}))
    assert first.origin == "inferred" and store.exists(schema_key("d"))
    second = catalog.for_batch("d", pa.table({"x": ["text"]}))
    assert second == first, "a pinned schema is not re-inferred"
    grown = catalog.grow(first, pa.table({"x": [3], "y": [1.0]}))
    assert grown is not None
    assert grown.columns == (*first.columns, ColumnSpec("y", "float", required=False))
    assert grown.schema_hash != first.schema_hash, "a new optional column evolves it"
    assert catalog.for_batch("d", pa.table({"x": [4]})) == grown
    no_values = pa.table({"x": [3], "z": pa.array([None], pa.float64())})
    assert catalog.grow(grown, no_values) is None, "a column no accepted row fills adds nothing"


def test_declared_schemas_evolve_only_compatibly_unless_breaking() -> None:
    old = schemas.declare("d", [ColumnSpec("x", "int", required=True)])
    ok = schemas.declare("d", [ColumnSpec("x", "int", min=0), ColumnSpec("y", "string")])
    schemas.check_evolution(old, ok, breaking=False)
    retyped = schemas.declare("d", [ColumnSpec("x", "float")])
    with pytest.raises(Conflict, match="changes type int -> float"):
        schemas.check_evolution(old, retyped, breaking=False)
    schemas.check_evolution(old, retyped, breaking=True)
    required = schemas.declare("d", [ColumnSpec("x", "int"), ColumnSpec("z", "int", required=True)])
    with pytest.raises(Conflict, match="'z' is required"):
        schemas.check_evolution(old, required, breaking=False)
    with pytest.raises(Conflict, match="removed"):
        schemas.check_evolution(ok, old, breaking=False)


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


def test_declare_stores_a_compatible_change_and_refuses_an_incompatible_one(
    tmp_path: Path,
) -> None:
    catalog = SchemaCatalog(LocalObjectStore(tmp_path), cache_seconds=0)
    first = catalog.declare("d", [ColumnSpec("x", "int", required=True)])
    assert first.origin == "declared" and catalog.get("d") == first
    grown = catalog.declare("d", [ColumnSpec("x", "int", min=0), ColumnSpec("y", "string")])
    assert catalog.get("d") == grown
    with pytest.raises(Conflict, match="changes type int -> float"):
        catalog.declare("d", [ColumnSpec("x", "float"), ColumnSpec("y", "string")])
    assert catalog.get("d") == grown, "a refused change stores nothing"
    retyped = catalog.declare("d", [ColumnSpec("x", "float")], breaking=True)
    assert catalog.get("d") == retyped


def test_declare_replaces_an_inferred_schema_and_checks_the_columns(tmp_path: Path) -> None:
    catalog = SchemaCatalog(LocalObjectStore(tmp_path), cache_seconds=0)
    catalog.for_batch("d", pa.table({"x": [1]}))
    with pytest.raises(Conflict, match="removed"):
        catalog.declare("d", [ColumnSpec("z", "int")])
    assert catalog.declare("d", [ColumnSpec("x", "int")]).origin == "declared"
    with pytest.raises(InvalidInput, match="declares no columns"):
        catalog.declare("e", [])


async def test_the_quality_report_joins_durable_and_live_counts(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    catalog, quality = SchemaCatalog(store), QualityTracker()
    with pytest.raises(NotFound, match="unknown"):
        await quality_report(catalog, quality, "nope")
    with pytest.raises(InvalidInput, match="dataset name"):
        await quality_report(catalog, quality, "../x")
    curate_batch(store, "d", "b1", pa.table({"v": [1, 2, 3]}), "h")
    durable = await quality_report(catalog, quality, "d")
    assert (durable.manifest_version, durable.curated_rows, durable.batches) == (1, 3, 0)
    schema = schemas.declare("d", [ColumnSpec("v", "int", max=2)])
    verdict = check_batch(schema, pa.table({"v": [1, 5], "w": [1, 1]}))
    flag = BatchFlag("b2", "v", "constant_column", "every value is 1")
    quality.record("d", "b2", verdict, [flag])
    report = await quality_report(catalog, quality, "d")
    assert (report.rows_accepted, report.rows_rejected, report.batches) == (1, 1, 1)
    assert report.rejection_reasons == {"out of range": 1, "unknown column 'w'": 2}
    assert report.flags == (flag,) and report.curated_rows == 3
