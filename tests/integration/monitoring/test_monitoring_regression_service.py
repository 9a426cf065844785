"""A regressor monitored over the real broker: its numeric prediction logs and its labels (numbers
as text, a few that are not) go through driftloop.predictions and driftloop.labels, and a
FriedmanDrift change of its errors comes out as one DriftDetected on driftloop.drift, with the
regression evidence and its reasons in words; GetDriftReport shows MAE over time.

The registry fake names the production version and its profile key; the profile (built as
training builds a regressor's) lives in a local object store; bus and gRPC are real.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from river.datasets import synth
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.services.monitoring.adapters.grpc import FULL_NAME, MonitoringServicer
from driftloop.services.monitoring.adapters.kafka import TOPICS, MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core import residual_calibration as friedman
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import ModelVersion
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MODEL = "prices"
FEATURES = [f"x{i}" for i in range(10)]
ROWS, CHANGE, BATCH = 3000, 2000, 250


def prediction_log(
    publisher: EventPublisher, x: np.ndarray, predicted: np.ndarray, ids: list[str], ts: float
) -> envelope.Envelope:
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["_prediction"] = predicted.astype(float)  # a regressor's log: float64
    frame["_request_id"] = ids
    frame["_ts"] = ts + np.arange(len(ids)) * 0.01
    log = events_pb2.PredictionLog(
        model=MODEL,
        version="1",
        row_count=len(ids),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
    )
    return publisher.event(log)


async def test_a_regressors_error_rise_over_the_bus_is_published_as_drift(
    common: CommonSettings,
) -> None:
    model, reference = friedman.fitted(0)
    x_ref, y_ref = friedman.friedman_rows(synth.Friedman(seed=7), 3000)
    profile = build_profile(
        MODEL,
        "1",
        pd.DataFrame(x_ref, columns=FEATURES),
        pd.Series(model.predict(x_ref)),
        target=pd.Series(y_ref),
        metrics={"mae": reference.mae, "rmse": reference.rmse, "holdout_rows": 1000.0},
        task="regression",
    )
    store = LocalObjectStore(common.data_dir / "objects")
    key = f"artifacts/{MODEL}/run1/profile.json"
    store.put(key, profile.to_json())
    fake = FakeRegistry()
    fake.put_version(ModelVersion(MODEL, "1", profile_uri=key), alias="production")

    await ensure_topics(common.bootstrap())
    monitors = ModelMonitors(DriftPolicy())
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    serving = EventPublisher(common.bootstrap(), "serving")
    handler = MonitoringHandler(monitors, publisher, RegistryProfiles(fake, store))  # type: ignore[arg-type]
    drift: list[envelope.Envelope] = []

    async def on_drift(event: envelope.Envelope) -> None:
        drift.append(event)

    consumers = [
        EventConsumer(
            bootstrap=common.bootstrap(),
            group="monitoring",
            topic_names=TOPICS,
            publisher=publisher,
            on_event=handler.handle,
        ),
        EventConsumer(
            bootstrap=common.bootstrap(),
            group="t-drift",
            topic_names=[topics.DRIFT],
            publisher=serving,
            on_event=on_drift,
        ),
    ]
    binding = ServiceBinding(
        add=monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server,
        servicer=MonitoringServicer(monitors),
        full_name=FULL_NAME,
    )
    server, _, port = build_server(common, 0, [binding])
    await publisher.start()
    await serving.start()
    await server.start()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in consumers)), 30)
        stream = synth.FriedmanDrift(drift_type="gra", position=(CHANGE, 10**9), seed=11)
        x, y = friedman.friedman_rows(stream, ROWS)
        predicted = model.predict(x)
        ids = [uuid.uuid4().hex for _ in range(ROWS)]
        for start in range(0, ROWS, BATCH):
            part = slice(start, start + BATCH)
            event = prediction_log(serving, x[part], predicted[part], ids[part], 1_000.0 + start)
            await serving.publish(topics.PREDICTIONS, MODEL, event)
        await wait_for(
            lambda: monitors.knows(MODEL) and monitors.report(MODEL).rows_seen == ROWS,
            30,
            "predictions observed",
        )
        texts = [str(v) for v in y]
        texts[5], texts[6] = "n/a", "nan"  # not numbers: counted and ignored
        for start in range(0, ROWS, BATCH):
            batch = events_pb2.LabelBatch(
                model=MODEL,
                request_ids=ids[start : start + BATCH],
                labels=texts[start : start + BATCH],
            )
            await serving.publish(topics.LABELS, MODEL, serving.event(batch))
        await wait_for(lambda: len(drift) >= 1, 30, "DriftDetected from a regressor's labels")
        await wait_for(
            lambda: monitors.report(MODEL).performance.labelled_rows == ROWS - 2,
            30,
            "every label handled",
        )

        # DRIFT has one partition: once this marker arrives, everything published before it has.
        marker = serving.event(events_pb2.DriftDetected(model="marker"))
        await serving.publish(topics.DRIFT, "marker", marker)
        await wait_for(lambda: any(e.event_id == marker.event_id for e in drift), 30, "marker")
        detected = [e for e in drift if e.event_id != marker.event_id]
        assert len(detected) == 1, "one episode for one drift"
        payload = detected[0].drift_detected
        assert (payload.model, payload.version) == (MODEL, "1")
        fired = {f.feature: f.test for f in payload.features if f.drifted}
        assert fired and set(fired.values()) <= {
            "abs_error_cusum",
            "abs_error_glr",
            "abs_error_adwin",
        }
        by_name = {f.feature: f for f in payload.features}
        assert by_name["_mae"].threshold == pytest.approx(reference.mae)
        assert by_name["_mae"].statistic > reference.mae
        assert any(r.startswith("MAE ") and "vs reference" in r for r in payload.reasons)
        assert monitors.get(MODEL).labels_invalid == 2

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            report = await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model=MODEL))
        performance = report.performance
        assert performance.task == "regression" and performance.invalid_labels == 2
        assert performance.reference_mae == pytest.approx(reference.mae)
        assert performance.live_mae > 2 * reference.mae
        assert len(performance.error_over_time) == (ROWS - 2) // 100
        assert report.open_episode_id == payload.episode_id
    finally:
        for consumer in consumers:
            await consumer.stop()
        await asyncio.gather(*tasks)
        await server.stop(grace=1)
        await publisher.stop()
        await serving.stop()
