"""Listing at fleet scale in the registry core and its gRPC conversion, on a real SQLite file:
each model's revision moves on every change a listing shows (triggers, migration 6), a listing
after a revision has only what changed, a fleet counts its partitions, and a brief listing
leaves out what a partition shares with its fleet."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_fleet_setup import FLEET_YAML, candidate, fleet_registry

from driftloop.services.registry.adapters.pb import model_to_pb
from driftloop.services.registry.core.domain import TrainingSpec
from driftloop.services.registry.core.migrations import MIGRATIONS
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared import fleet
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with fleet_registry(tmp_path) as r:
        yield r


def route(n: int) -> str:
    return fleet.partition_name("arrivals", {"route_id": n})


def test_a_listing_after_a_revision_has_only_the_models_changed_since(registry: Registry) -> None:
    for n in range(3):
        registry.register(candidate(route(n), f"r{n}", 10.0))
    first = registry.listing()
    assert [m.name for m in first.models] == ["arrivals", route(0), route(1), route(2)]
    assert first.revision == max(m.revision for m in first.models) > 0
    assert registry.listing(changed_after=first.revision).models == []

    registry.register(candidate(route(1), "r1b", 5.0, champion="1"))  # promoted: 1 archived
    changed = registry.listing(changed_after=first.revision)
    assert [(m.name, m.production_version) for m in changed.models] == [(route(1), "2")]
    assert changed.revision > first.revision

    registry.rollback(route(1), "", "bad deploy")
    again = registry.listing(changed_after=changed.revision)
    assert [(m.name, m.production_version) for m in again.models] == [(route(1), "1")]
    # a new partition, and the fleet's filter
    registry.register(candidate(route(7), "r7", 10.0))
    only = registry.listing("arrivals", changed_after=again.revision)
    assert [m.name for m in only.models] == [route(7)]


def test_a_fleet_spec_change_lists_its_partitions_again(registry: Registry) -> None:
    registry.register(candidate(route(0), "r0", 10.0))
    before = registry.listing()
    registry.set_spec("arrivals", TrainingSpec(), spec_yaml=FLEET_YAML + "window_rows: 500\n")
    changed = registry.listing(changed_after=before.revision)
    assert [m.name for m in changed.models] == ["arrivals", route(0)]
    assert changed.models[1].spec.window_rows == 500  # the partition's spec is the fleet's


def test_a_fleet_counts_its_partitions(registry: Registry) -> None:
    assert registry.get_model("arrivals").partitions == 0
    for n in range(4):
        registry.register(candidate(route(n), f"r{n}", 10.0))
    assert registry.get_model("arrivals").partitions == 4
    assert registry.get_model(route(0)).partitions == 0
    assert {m.name: m.partitions for m in registry.list_models()}["arrivals"] == 4


def test_a_negative_revision_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="changed_after must not be negative"):
        registry.listing(changed_after=-1)


def test_a_brief_model_leaves_out_what_a_partition_shares_with_its_fleet(
    registry: Registry,
) -> None:
    registry.register(candidate(route(0), "r0", 10.0))
    fleet_model, partition = registry.list_models()
    brief = model_to_pb(partition, brief=True)
    assert not brief.HasField("spec") and brief.dataset == "" and brief.target == ""
    assert (brief.name, brief.fleet, brief.production_version) == (route(0), "arrivals", "1")
    assert brief.revision == partition.revision > 0
    assert model_to_pb(partition).spec.partition_by == ["route_id"]  # full: as before
    whole = model_to_pb(fleet_model, brief=True)  # a fleet keeps its spec: serving reads it
    assert whole.spec.partition_by == ["route_id"] and whole.partitions == 1
    assert len(brief.SerializeToString()) * 3 < len(model_to_pb(partition).SerializeToString())


def test_a_database_from_before_revisions_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO models (name, dataset, target, spec_json, created_at) VALUES (?,?,?,?,?)",
        ("old", "d", "y", TrainingSpec().to_json(), 0.0),
    )
    conn.close()
    store = RegistryStore(path)  # migration 6: a column, an index and four triggers
    try:
        registry = Registry(store)
        first = registry.listing()
        assert [(m.name, m.revision) for m in first.models] == [("old", 1)]
        registry.create_model("new", "d", "y", TrainingSpec())
        assert [m.name for m in registry.listing(changed_after=first.revision).models] == ["new"]
        triggers = store._conn.execute(  # noqa: SLF001 - what the migration created
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"
        ).fetchone()[0]
        assert triggers == 4
    finally:
        store.close()
