"""Uniqueness of a key column: duplicates within a batch and across batches are rejected with
"duplicate key <col>=<value>", a re-delivered batch keeps its own keys, memory is bounded, the
keys survive a restart (rebuilt from curated files), and rows in = accepted + rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftloop.services.validation.core import schema as schemas
from driftloop.services.validation.core.checks import DUPLICATE_KEY, check_batch
from driftloop.services.validation.core.curation import CuratedPart, ManifestWriter
from driftloop.services.validation.core.key_catalog import KeyCatalog
from driftloop.services.validation.core.keys import KeyIndex, hash_keys
from driftloop.services.validation.core.schema import ColumnSpec, DatasetSchema
from driftloop.shared.errors import InvalidInput
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def keyed(kind: str = "string") -> DatasetSchema:
    return schemas.declare(
        "orders",
        [
            ColumnSpec("id", kind, required=False, unique=True),
            ColumnSpec("amount", "float", min=0),
        ],
    )


def test_duplicates_within_and_across_batches_are_rejected_with_the_key() -> None:
    schema, keys = keyed(), KeyIndex(("id",))
    first = pa.table({"id": ["a", "b", "a", None, None], "amount": [1.0, 2.0, 3.0, 4.0, 5.0]})
    verdict = check_batch(schema, first, keys, "b1")
    assert [r.row_index for r in verdict.rejections] == [2]
    assert verdict.rejections[0].reason == "duplicate key id='a'"
    assert verdict.rejections[0].category == DUPLICATE_KEY
    assert verdict.accepted.column("id").to_pylist() == ["a", "b", None, None]  # nulls: no key
    second = pa.table({"id": ["c", "b"], "amount": [1.0, 1.0]})
    verdict = check_batch(schema, second, keys, "b2")
    assert [(r.row_index, r.reason) for r in verdict.rejections] == [(1, "duplicate key id='b'")]
    assert verdict.total_rows == verdict.accepted_rows + len(verdict.rejections)


def test_a_row_rejected_for_another_reason_does_not_claim_its_key() -> None:
    schema, keys = keyed("int"), KeyIndex(("id",))
    table = pa.table({"id": [7, 7, 8], "amount": [-1.0, 2.0, 3.0]})
    verdict = check_batch(schema, table, keys, "b1")
    assert [(r.row_index, r.category) for r in verdict.rejections] == [(0, "out of range")]
    assert verdict.accepted.column("id").to_pylist() == [7, 8]


def test_a_redelivered_batch_keeps_its_own_keys() -> None:
    schema, keys = keyed(), KeyIndex(("id",))
    table = pa.table({"id": ["a", "a", "b"], "amount": [1.0, 1.0, 1.0]})
    once = check_batch(schema, table, keys, "b1")
    again = check_batch(schema, table, keys, "b1")
    other = check_batch(schema, table, keys, "b2")
    assert [r.reason for r in once.rejections] == [r.reason for r in again.rejections]
    assert once.accepted_rows == again.accepted_rows == 2
    assert other.accepted_rows == 0


def test_without_an_index_only_the_batch_is_checked() -> None:
    verdict = check_batch(keyed(), pa.table({"id": ["x", "x"], "amount": [1.0, 2.0]}))
    assert len(verdict.rejections) == 1


def test_unique_is_declared_for_int_or_string_and_not_inferred() -> None:
    with pytest.raises(InvalidInput, match="unique applies to int or string"):
        schemas.declare("d", [ColumnSpec("x", "float", unique=True)])
    inferred = schemas.infer("d", pa.table({"id": ["a"], "n": [1]}))
    assert inferred.unique_columns == ()
    assert keyed().unique_columns == ("id",)
    assert schemas.DatasetSchema.from_json(keyed().to_json()) == keyed()


def test_schemas_without_unique_keep_their_hash() -> None:
    plain = schemas.declare("d", [ColumnSpec("x", "int")])
    assert "unique" not in plain.to_json().decode()
    assert (
        plain.schema_hash != schemas.declare("d", [ColumnSpec("x", "int", unique=True)]).schema_hash
    )


def test_memory_is_bounded_and_the_newest_keys_are_kept() -> None:
    index = KeyIndex(("id",), max_keys=1000)
    for batch in range(40):
        values = np.arange(batch * 100, (batch + 1) * 100, dtype=np.int64)
        index.add([f"b{batch}"], {"id": hash_keys(pa.array(values))})
        assert index.size("id") <= 1000
    newest = hash_keys(pa.array(np.arange(3500, 4000, dtype=np.int64)))
    assert index.duplicates("id", "other", newest).all(), "the newest half is always remembered"
    assert not index.duplicates("id", "other", hash_keys(pa.array([0], pa.int64()))).any()


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=40), min_size=1, max_size=6))
def test_accepted_keys_are_unique_across_batches_and_rows_are_conserved(
    batches: list[list[int]],
) -> None:
    schema, keys = keyed("int"), KeyIndex(("id",))
    accepted: list[int] = []
    for n, ids in enumerate(batches):
        table = pa.table({"id": pa.array(ids, pa.int64()), "amount": [1.0] * len(ids)})
        verdict = check_batch(schema, table, keys, f"b{n}")
        assert verdict.total_rows == verdict.accepted_rows + len(verdict.rejections)
        accepted.extend(verdict.accepted.column("id").to_pylist())
    assert len(accepted) == len(set(accepted))
    assert set(accepted) == {i for ids in batches for i in ids}


def test_keys_are_rebuilt_from_curated_files_after_a_restart(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    schema = keyed()
    writer = ManifestWriter(store)
    before = KeyCatalog(store).for_dataset("orders", ("id",), None)
    table = pa.table({"id": ["a", "b"], "amount": [1.0, 2.0]})
    verdict = check_batch(schema, table, before, "b1")
    parts = [CuratedPart("b1", verdict.accepted)]
    head = writer.curate("orders", parts, schema.schema_hash).manifest
    restarted = KeyCatalog(store).for_dataset("orders", ("id",), head)
    assert head is not None and restarted.version == head.version
    later = check_batch(schema, pa.table({"id": ["b", "c"], "amount": [1.0, 1.0]}), restarted, "b2")
    assert [r.reason for r in later.rejections] == ["duplicate key id='b'"]
    replay = check_batch(schema, table, restarted, "b1")  # b1 delivered again after the restart
    assert replay.accepted_rows == 2
