"""ModelSlot: atomic swaps, the previous version kept for rollback, older versions unloaded."""

from __future__ import annotations

import pytest
from serving_models import make_pipeline

from driftloop.services.serving.core.inference import predict, warmup_frame
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.errors import NotFound

pytestmark = pytest.mark.unit


def loaded(version: str, model: str = "m", seed: int = 0) -> LoadedModel:
    pipeline = make_pipeline(seed)
    return LoadedModel(model, version, pipeline, artifacts.signature(pipeline), f"sha{version}")


def test_empty_version_gets_production_and_named_versions_get_loaded_ones() -> None:
    slot = ModelSlot()
    v1, v2 = loaded("1"), loaded("2")
    assert slot.swap(v1) is None
    assert slot.swap(v2) is v1
    assert slot.get("m") is v2
    assert slot.get("m", "1") is v1
    assert slot.production_version("m") == "2"
    assert slot.versions("m") == ["2", "1"]
    assert slot.has("m") and slot.has("m", "1") and not slot.has("m", "7")


def test_a_reference_taken_before_a_swap_still_predicts_with_its_version() -> None:
    slot = ModelSlot()
    slot.swap(loaded("1"))
    in_flight = slot.get("m")
    slot.swap(loaded("2", seed=1))
    slot.swap(loaded("3", seed=2))  # v1 is now unloaded from the slot...
    labels, proba = predict(in_flight, warmup_frame(in_flight.signature))
    assert in_flight.version == "1"  # ...but the request holding it still answers with it
    assert len(labels) == 1 and proba.shape == (1, 2)
    assert slot.get("m").version == "3"


def test_previous_version_is_kept_and_older_ones_unloaded() -> None:
    slot = ModelSlot()
    for version in ("1", "2", "3"):
        slot.swap(loaded(version))
    assert slot.versions("m") == ["3", "2"]
    with pytest.raises(NotFound, match=r"version '1' is not loaded.*3, 2"):
        slot.get("m", "1")


def test_rollback_to_the_previous_version_keeps_the_other_loaded() -> None:
    slot = ModelSlot()
    v1, v2 = loaded("1"), loaded("2")
    slot.swap(v1)
    slot.swap(v2)
    slot.swap(slot.get("m", "1"))
    assert slot.get("m") is v1
    assert slot.versions("m") == ["1", "2"]


def test_reswapping_the_production_version_keeps_the_previous_one() -> None:
    slot = ModelSlot()
    slot.swap(loaded("1"))
    slot.swap(loaded("2"))
    slot.swap(loaded("2"))
    assert slot.versions("m") == ["2", "1"]


def test_unknown_model_is_not_found_naming_what_is_served() -> None:
    slot = ModelSlot()
    with pytest.raises(NotFound, match=r"model 'nope' is not served \(served models: none\)"):
        slot.get("nope")
    slot.swap(loaded("1", model="iris"))
    with pytest.raises(NotFound, match="served models: iris"):
        slot.get("nope", "1")
    assert not slot.has("nope")
    assert slot.models() == ["iris"]
