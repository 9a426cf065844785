"""The registry mirror (shared/registry_mirror.py) against the fake registry: a full brief
listing first, then only what changed since the last revision, a full listing again when due or
when the registry's revision went back, and a fleet's partition count without listing them."""

from __future__ import annotations

import pytest
from registry_fake import FakeRegistry

from driftloop.shared.registry_mirror import ModelMirror
from driftloop.shared.registry_types import Model, ModelListing, ModelVersion, TrainingSpec

pytestmark = pytest.mark.unit

SPEC = TrainingSpec(task="regression", partition_by=("route_id",))


def version(model: str, number: str) -> ModelVersion:
    return ModelVersion(model=model, version=number, status="candidate", artifact_uri="a")


class Counting:
    """The fake, recording what each listing asked for and how many models came back."""

    def __init__(self, fake: FakeRegistry) -> None:
        self.fake = fake
        self.asked: list[tuple[bool, int, int]] = []

    async def model_listing(
        self, *, fleet: str = "", brief: bool = False, changed_after: int = 0
    ) -> ModelListing:
        found = await self.fake.model_listing(fleet=fleet, brief=brief, changed_after=changed_after)
        self.asked.append((brief, changed_after, len(found.models)))
        return found


async def test_only_what_changed_is_listed_between_full_listings() -> None:
    fake = FakeRegistry()
    fake.put_model(Model("arrivals", "trips", "delay_s", SPEC))
    for n in range(3):
        fake.put_model(Model(f"arrivals/route_id={n}", "trips", "delay_s", SPEC, fleet="arrivals"))
    fake.put_version(version("arrivals/route_id=1", "1"), alias="production")
    now = [0.0]
    lister = Counting(fake)
    mirror = ModelMirror(lister, full_every_s=60, clock=lambda: now[0])

    models = await mirror.refresh()
    assert lister.asked == [(True, 0, 4)]
    assert models["arrivals/route_id=1"].production_version == "1"
    assert models["arrivals/route_id=1"].spec == TrainingSpec()  # brief: the fleet's spec
    assert models["arrivals"].spec.partition_by == ("route_id",)
    first = mirror.revision

    now[0] = 5.0
    fake.put_version(version("arrivals/route_id=2", "1"), alias="production")
    models = await mirror.refresh()
    assert lister.asked[-1] == (True, first, 1)  # only route 2 came back
    assert {n: m.production_version for n, m in models.items() if m.production_version} == {
        "arrivals/route_id=1": "1",
        "arrivals/route_id=2": "1",
    }
    now[0] = 10.0
    await mirror.refresh()
    assert lister.asked[-1] == (True, mirror.revision, 0)

    now[0] = 61.0  # the safety net: everything again
    await mirror.refresh()
    assert lister.asked[-1] == (True, 0, 4)


async def test_a_registry_whose_revision_went_back_is_listed_in_full() -> None:
    fake = FakeRegistry()
    fake.put_model(Model("churn", "d", "y"))
    fake.put_version(version("churn", "1"), alias="production")
    mirror = ModelMirror(fake, full_every_s=3600)
    assert (await mirror.refresh())["churn"].production_version == "1"

    fresh = FakeRegistry()  # a new registry database behind the same address
    fresh.put_model(Model("iris", "d", "y"))
    mirror._lister = fresh  # noqa: SLF001 - the registry behind the client changed
    assert set(await mirror.refresh()) == {"iris"}


async def test_a_fleet_counts_its_partitions_without_listing_them() -> None:
    fake = FakeRegistry()
    fake.put_model(Model("arrivals", "trips", "delay_s", SPEC))
    for n in range(5):
        fake.put_model(Model(f"arrivals/route_id={n}", "trips", "delay_s", SPEC, fleet="arrivals"))
    assert (await fake.get_model("arrivals")).partitions == 5
    assert [m.partitions for m in await fake.list_models(fleet="arrivals")] == [0] * 5
