"""Labels of a model whose predictions awaiting labels were restored (after a restart or when its
partition moved to this instance, adapters/moves.py) before its monitor exists: the handler
loads its reference then and the labels join, rather than being skipped as an unmonitored
model's. No broker: the states are restored straight into the monitors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from registry_fake import FakeRegistry

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.registry_types import Model, ModelVersion, TrainingSpec

pytestmark = pytest.mark.unit

MODEL = "churn"


def labels(publisher: EventPublisher, model: str, ids: list[str]) -> SimpleNamespace:
    batch = events_pb2.LabelBatch(model=model, request_ids=ids, labels=["1"] * len(ids))
    return SimpleNamespace(value=publisher.event(batch).SerializeToString())


async def test_labels_of_a_restored_model_join_before_its_first_log(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    frame = pd.DataFrame({"x": np.random.default_rng(1).normal(size=500)})
    fake = FakeRegistry()
    fake.put_model(Model(MODEL, "customers", "churned", TrainingSpec()))
    store.put(f"{MODEL}.json", build_profile(MODEL, "1", frame, None).to_json())
    fake.put_version(ModelVersion(MODEL, "1", profile_uri=f"{MODEL}.json"), "production")
    monitors = ModelMonitors(DriftPolicy())
    publisher = EventPublisher("127.0.0.1:1", "serving")  # never started: builds envelopes
    handler = MonitoringHandler(monitors, publisher, RegistryProfiles(fake, store))  # type: ignore[arg-type]
    monitors.restore_pending(MODEL, [("r1", ("1", "1", 1000.0)), ("r2", ("1", "0", 1001.0))])

    await handler.handle_records([labels(publisher, MODEL, ["r1", "r2"])])

    performance = monitors.report(MODEL).performance
    assert performance.labelled_rows == 2
    assert performance.unmatched_labels == 0 and performance.pending_predictions == 0
    # a model with nothing restored and no monitor is still skipped (not loaded by labels)
    await handler.handle_records([labels(publisher, "other", ["r3"])])
    assert not monitors.knows("other")
