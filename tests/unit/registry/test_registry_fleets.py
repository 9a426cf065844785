"""Fleets in the registry core on a real SQLite file: partition models appear on their first
registration with their fleet's spec, are compared with the fleet's global model, keep their own
versions and aliases, and bad partition names, specs and counts are refused clearly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_fleet_setup import FLEET_YAML, candidate, fleet_registry

from driftloop.services.registry.core import specs
from driftloop.services.registry.core.domain import TrainingSpec
from driftloop.services.registry.core.registry import Registry
from driftloop.shared import fleet
from driftloop.shared.errors import InvalidInput, NotFound, TooLarge

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with fleet_registry(tmp_path, max_partitions=3) as r:
        yield r


def test_a_partition_appears_on_its_first_registration_with_the_fleets_spec(
    registry: Registry,
) -> None:
    assert registry.register(candidate("arrivals", "g1", 30.0)).promoted
    name = fleet.partition_name("arrivals", {"route_id": 42})
    assert name == "arrivals/route_id=42"
    first = registry.register(candidate(name, "p1", 10.0, champion="1", champ=30.0))
    assert first.promoted and first.version.version == "1"
    assert first.decision_reason.startswith("against the fleet's global model arrivals version 1")
    model = registry.get_model(name)
    assert (model.fleet, model.dataset, model.target) == ("arrivals", "trips", "delay_s")
    assert model.spec == registry.get_model("arrivals").spec
    assert registry.get_spec(name).number == registry.get_spec("arrivals").number
    assert [m.name for m in registry.list_models("arrivals")] == [name]
    assert registry.production("arrivals").version == "1"  # the global model is not archived
    # the partition's next candidate is compared with its own champion
    worse = registry.register(candidate(name, "p2", 12.0, champion="1", champ=10.0))
    assert not worse.promoted and "against the fleet" not in worse.decision_reason


def test_a_partition_that_does_not_beat_the_global_model_is_not_promoted(
    registry: Registry,
) -> None:
    registry.register(candidate("arrivals", "g1", 30.0))
    name = "arrivals/route_id=7"
    found = registry.register(candidate(name, "p1", 31.0, champion="1", champ=30.0))
    assert not found.promoted
    with pytest.raises(NotFound, match="no production version"):
        registry.production(name)


def test_a_fleets_spec_change_reaches_its_partitions(registry: Registry) -> None:
    registry.register(candidate("arrivals", "g1", 30.0))
    registry.register(candidate("arrivals/route_id=1", "p1", 10.0, champion="1", champ=30.0))
    changed = specs.parse_yaml(FLEET_YAML.replace("ridge", "random_forest")).spec
    registry.set_spec("arrivals", changed)
    assert registry.get_model("arrivals/route_id=1").spec.estimator == "random_forest"
    assert registry.get_spec("arrivals/route_id=1").number == 2
    with pytest.raises(
        InvalidInput, match="trains with the fleet's spec: set the spec of arrivals"
    ):
        registry.set_spec("arrivals/route_id=1", changed)
    with pytest.raises(InvalidInput, match="partition_by.*cannot change"):
        registry.set_spec("arrivals", specs.parse_yaml(FLEET_YAML.replace("route_id", "stop")).spec)


@pytest.mark.parametrize(
    "name, message",
    [
        ("arrivals/stop=1", "fleet arrivals partitions by \\['route_id'\\]"),
        ("arrivals/route_id=%41", "not in canonical encoding"),
        ("arrivals/route_id=1/../x", "is invalid"),
        ("../arrivals/route_id=1", "is invalid"),
        ("arrivals/route_id", "is invalid"),
        ("plain/route_id=1", "does not exist"),
    ],
)
def test_bad_partition_names_are_refused(registry: Registry, name: str, message: str) -> None:
    with pytest.raises((InvalidInput, NotFound), match=message):
        registry.register(candidate(name, "p1", 10.0))


def test_partition_models_cannot_be_declared_and_plain_models_have_none(
    registry: Registry,
) -> None:
    with pytest.raises(InvalidInput, match="partition models appear by themselves"):
        registry.create_model("arrivals/route_id=1", "trips", "delay_s", TrainingSpec())
    registry.create_model("plain", "trips", "delay_s", TrainingSpec())
    with pytest.raises(InvalidInput, match="is not a fleet"):
        registry.register(candidate("plain/route_id=1", "p1", 10.0))


def test_the_fleets_partition_limit_is_kept(registry: Registry) -> None:
    for route in range(3):
        registry.register(candidate(f"arrivals/route_id={route}", f"p{route}", 10.0))
    with pytest.raises(TooLarge, match="fleet arrivals has 3 partition models, the limit"):
        registry.register(candidate("arrivals/route_id=9", "p9", 10.0))


def test_partition_by_is_checked_in_the_spec(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="target 'delay_s' cannot be a partition column"):
        registry.create_model(
            "f2", "", "", TrainingSpec(), spec_yaml=FLEET_YAML.replace("[route_id]", "[delay_s]")
        )
    with pytest.raises(InvalidInput, match="lists a column twice"):
        registry.create_model(
            "f3", "", "", TrainingSpec(), spec_yaml=FLEET_YAML.replace("[route_id]", "[a, a]")
        )


def test_names_round_trip_with_encoded_values() -> None:
    name = fleet.partition_name("arrivals", {"route id": "Nord/Süd", "dir": 1.0})
    assert name == "arrivals/route%20id=Nord%2FS%C3%BCd/dir=1"
    parsed = fleet.parse(name)
    assert parsed is not None and parsed.fleet == "arrivals"
    assert parsed.values == (("route id", "Nord/Süd"), ("dir", "1"))
    assert str(parsed) == name
    assert fleet.parse("arrivals") is None
    assert fleet.fleet_of(name) == "arrivals" and fleet.fleet_of("m") == "m"
    with pytest.raises(InvalidInput, match="not a finite number"):
        fleet.partition_name("arrivals", {"r": float("nan")})
