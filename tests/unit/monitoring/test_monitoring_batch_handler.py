"""The monitoring handler's batch path (adapters/kafka.py `handle_records`, what main.py gives
the consumer): a poll's events are handled in order, and a batch the consumer retries record by
record after one record failed does not observe the others twice. No broker: nothing here
publishes (no drift) and there is no changelog."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.errors import InvalidInput
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import Model, ModelVersion, TrainingSpec

pytestmark = pytest.mark.unit

FLEET = "arrivals"
PARTITION = f"{FLEET}/route_id=1"


async def handler(tmp_path: Path) -> tuple[MonitoringHandler, ModelMonitors, EventPublisher]:
    store = LocalObjectStore(tmp_path)
    frame = pd.DataFrame({"x": np.random.default_rng(1).normal(size=500)})
    fake = FakeRegistry()
    fake.put_model(Model(FLEET, "trips", "late", TrainingSpec(partition_by=("route_id",))))
    fake.put_model(Model(PARTITION, "trips", "late", fleet=FLEET))
    for model in (FLEET, PARTITION):
        store.put(f"{model}.json", build_profile(model, "1", frame, None).to_json())
        fake.put_version(ModelVersion(model, "1", profile_uri=f"{model}.json"), "production")
    monitors = ModelMonitors(DriftPolicy())
    publisher = EventPublisher("127.0.0.1:1", "serving")  # never started: builds envelopes
    source = RegistryProfiles(fake, store)  # type: ignore[arg-type]
    return MonitoringHandler(monitors, publisher, source), monitors, publisher


def record(publisher: EventPublisher, rows: int, fleet: str = FLEET) -> SimpleNamespace:
    frame = pd.DataFrame({"x": np.zeros(rows), "_prediction": ["1"] * rows})
    frame["_request_id"] = [uuid.uuid4().hex for _ in range(rows)]
    log = events_pb2.PredictionLog(
        model=PARTITION,
        version="1",
        row_count=rows,
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
        fleet=fleet,
    )
    return SimpleNamespace(value=publisher.event(log).SerializeToString())


async def test_a_batch_retried_record_by_record_observes_each_log_once(tmp_path: Path) -> None:
    found, monitors, publisher = await handler(tmp_path)
    first, second = record(publisher, 3), record(publisher, 4)
    bad = record(publisher, 2, fleet="other")  # names a fleet it is no partition of
    with pytest.raises(InvalidInput, match="not a partition"):
        await found.handle_records([first, bad, second])
    assert monitors.report(PARTITION).rows_seen == 3
    for one in (first, bad, second):  # as the consumer retries a failed batch
        try:
            assert await found.handle_records([one]) is None  # no changelog: no acks to wait
        except InvalidInput:
            assert one is bad
    assert monitors.report(PARTITION).rows_seen == 7, "the first log was not observed twice"
    assert len(found.fleets.indexes.index(FLEET)) == 7, "their ids, indexed once each"


async def test_undecodable_bytes_fail_the_record(tmp_path: Path) -> None:
    found, _, _ = await handler(tmp_path)
    with pytest.raises(InvalidInput, match="Envelope"):
        await found.handle_records([SimpleNamespace(value=b"garbage")])
