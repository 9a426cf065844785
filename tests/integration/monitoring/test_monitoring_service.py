"""Monitoring against the real broker: prediction logs in, one DriftDetected out, then a switch.

The registry is not part of this service, so the handler's ReferenceSource asks the registry
fake (tests/registry_fake.py) which version and profile key, and reads the profile from a local
object store in the test's data dir (the bus and store are real).
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
import uuid

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from registry_fake import FakeRegistry
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.services.monitoring.adapters.grpc import FULL_NAME, MonitoringServicer
from driftloop.services.monitoring.adapters.kafka import TOPICS, MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.objectstore import LocalObjectStore, ObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import ModelVersion
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MODEL = "churn"


def store_profiles(store: ObjectStore, keys: dict[str, str], production: str) -> RegistryProfiles:
    """The real ReferenceSource over the registry fake (versions with these profile keys)."""
    fake = FakeRegistry()
    for version, key in sorted(keys.items()):
        alias = "production" if version == production else ""
        fake.put_version(ModelVersion(MODEL, version, profile_uri=key), alias)
    return RegistryProfiles(fake, store)  # type: ignore[arg-type]


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(4)})
    frame["x3"] += shift
    frame["plan"] = rng.choice(["basic", "pro"], n, p=[0.7, 0.3])
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


def store_profile(store: ObjectStore, frame: pd.DataFrame, version: str) -> str:
    key = f"artifacts/{MODEL}/run{version}/profile.json"
    profile = build_profile(MODEL, version, frame.drop(columns="_prediction"), frame["_prediction"])
    store.put(key, profile.to_json())
    return key


def prediction_log(
    publisher: EventPublisher, frame: pd.DataFrame, version: str, ts: float
) -> envelope.Envelope:
    frame = frame.assign(
        _request_id=[uuid.uuid4().hex for _ in range(len(frame))],
        _ts=ts + np.arange(len(frame)) * 0.01,
    )
    log = events_pb2.PredictionLog(
        model=MODEL,
        version=version,
        row_count=len(frame),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
    )
    return publisher.event(log)


async def test_drift_is_published_once_and_a_deployment_switches(common: CommonSettings) -> None:
    rng = np.random.default_rng(21)
    store = LocalObjectStore(common.data_dir / "objects")
    keys = {
        "1": store_profile(store, rows(rng, 4000), "1"),
        "2": store_profile(store, rows(rng, 4000, shift=2.0), "2"),
    }
    await ensure_topics(common.bootstrap())
    monitors = ModelMonitors(DriftPolicy())
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    serving = EventPublisher(common.bootstrap(), "serving")
    handler = MonitoringHandler(monitors, publisher, store_profiles(store, keys, "1"))
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
        batches = [rows(rng, 100) for _ in range(10)] + [rows(rng, 100, 2.0) for _ in range(10)]
        for i, batch in enumerate(batches):
            event = prediction_log(serving, batch, "1", 1_000.0 + i)
            await serving.publish(topics.PREDICTIONS, MODEL, event)

        await wait_for(
            lambda: monitors.knows(MODEL) and monitors.report(MODEL).rows_seen == 2000,
            30,
            "all prediction rows observed",
        )
        # DRIFT has one partition: once this marker arrives, everything published before it has.
        marker = serving.event(events_pb2.DriftDetected(model="marker"))
        await serving.publish(topics.DRIFT, "marker", marker)
        await wait_for(lambda: any(e.event_id == marker.event_id for e in drift), 30, "marker")
        detected = [e for e in drift if e.event_id != marker.event_id]
        assert len(detected) == 1, "one episode for one drift"
        event = detected[0]
        assert event.producer == "monitoring" and event.type == "DriftDetected"
        assert event.correlation_id == event.event_id and event.causation_id == ""
        payload = event.drift_detected
        assert (payload.model, payload.version, payload.live_rows) == (MODEL, "1", 300)
        assert {f.feature for f in payload.features if f.drifted} == {"x3"}
        assert payload.window_start.seconds >= 1_000 and payload.reference_rows == 4000

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            report = await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model=MODEL))
            assert report.open_episode_id == payload.episode_id and report.drifted
            listed = await stub.ListDriftEvents(monitoring_pb2.ListDriftEventsRequest())
            assert [e.episode_id for e in listed.events] == [payload.episode_id]

            deployed = serving.event(
                events_pb2.ModelDeployed(model=MODEL, version="2", previous_version="1")
            )
            await serving.publish(topics.DEPLOYMENTS, MODEL, deployed)
            # The deployment and the new version's logs travel on different topics: rows of v2
            # read before the switch are ignored, so send them once v2 is in force.
            await wait_for(lambda: monitors.version(MODEL) == "2", 30, "switch to version 2")
            fresh = prediction_log(serving, rows(rng, 250, 2.0), "2", 2_000.0)
            await serving.publish(topics.PREDICTIONS, MODEL, fresh)

            async def switched() -> monitoring_pb2.DriftReport | None:
                r = await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model=MODEL))
                return r if r.rows_seen == 250 else None

            report = await wait_for(switched, 30, "version 2 in force with fresh rows")
            assert report.version == "2" and report.open_episode_id == "" and not report.drifted
            assert report.reference_rows == 4000 and report.evaluated_at.seconds >= 1
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model="ghost"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for consumer in consumers:
            await consumer.stop()
        await asyncio.gather(*tasks)
        await server.stop(grace=1)
        await publisher.stop()
        await serving.stop()


async def test_unreachable_registry_is_not_fatal(common: CommonSettings) -> None:
    # common.ports.registry is a free port: nothing listens there.
    store = LocalObjectStore(common.data_dir / "objects")
    client = RegistryClient(common, timeout=1.0)
    monitors = ModelMonitors(DriftPolicy())
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    handler = MonitoringHandler(monitors, publisher, RegistryProfiles(client, store))
    await publisher.start()
    try:
        await handler.reconcile()  # logs a warning, loads nothing
        event = prediction_log(publisher, rows(np.random.default_rng(1), 10), "1", 0.0)
        await handler.handle(event)  # no profile to test against: skipped, retried later
        assert not monitors.knows(MODEL)
    finally:
        await client.close()
        await publisher.stop()


async def test_service_process_starts_serves_and_stops(common: CommonSettings) -> None:
    # The registry port in `common` is free: the service must start anyway (lazy profiles).
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__MONITORING": str(common.ports.monitoring),
        "DRIFTLOOP_PORTS__METRICS_MONITORING": str(common.ports.metrics_monitoring),
        "DRIFTLOOP_PORTS__REGISTRY": str(common.ports.registry),
        "DRIFTLOOP_MONITORING_WINDOW_ROWS": "400",
    }
    log_path = common.data_dir.parent / "monitoring.log"
    common.data_dir.mkdir(parents=True, exist_ok=True)
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.monitoring"], env=env, log_path=str(log_path)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{common.ports.monitoring}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=FULL_NAME))
                return reply.status == health_pb2.HealthCheckResponse.SERVING

            await wait_for(serving, 45, "monitoring service SERVING")
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            listed = await stub.ListDriftEvents(monitoring_pb2.ListDriftEventsRequest())
            assert list(listed.events) == []
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{common.ports.metrics_monitoring}/metrics", timeout=5
        ).read()
        assert b"driftloop_monitoring_rows_observed_total" in metrics
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert "registry_unreachable_at_start" in log_path.read_text()


def labelled_log(
    publisher: EventPublisher, frame: pd.DataFrame, ids: list[str], ts: float
) -> envelope.Envelope:
    frame = frame.assign(_request_id=ids, _ts=ts + np.arange(len(frame)) * 0.01)
    log = events_pb2.PredictionLog(
        model=MODEL,
        version="1",
        row_count=len(frame),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
    )
    return publisher.event(log)


async def test_labels_join_predictions_and_an_error_rise_is_published(
    common: CommonSettings,
) -> None:
    rng = np.random.default_rng(31)
    store = LocalObjectStore(common.data_dir / "objects")
    keys = {"1": store_profile(store, rows(rng, 4000), "1")}
    await ensure_topics(common.bootstrap())
    monitors = ModelMonitors(DriftPolicy(label_burn_in_rows=300))
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    serving = EventPublisher(common.bootstrap(), "serving")
    handler = MonitoringHandler(monitors, publisher, store_profiles(store, keys, "1"))
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
    await publisher.start()
    await serving.start()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in consumers)), 30)
        frame = rows(rng, 1500)
        ids = [uuid.uuid4().hex for _ in range(len(frame))]
        for start in range(0, 1500, 250):
            part = frame.iloc[start : start + 250]
            event = labelled_log(serving, part, ids[start : start + 250], 1_000.0 + start)
            await serving.publish(topics.PREDICTIONS, MODEL, event)
        await wait_for(
            lambda: monitors.knows(MODEL) and monitors.report(MODEL).rows_seen == 1500,
            30,
            "predictions observed",
        )
        # Labels come later: the first 500 rows mostly right, then half of them wrong.
        predicted = frame["_prediction"].to_numpy()
        wrong = rng.random(1500) < np.r_[np.full(500, 0.05), np.full(1000, 0.5)]
        truth = np.where(wrong, np.where(predicted == "1", "0", "1"), predicted)
        for start in range(0, 1500, 100):
            batch = events_pb2.LabelBatch(
                model=MODEL,
                request_ids=ids[start : start + 100],
                labels=truth[start : start + 100].tolist(),
            )
            await serving.publish(topics.LABELS, MODEL, serving.event(batch))
        await wait_for(lambda: len(drift) >= 1, 30, "DriftDetected from labels")
        payload = drift[0].drift_detected
        by_name = {f.feature: f for f in payload.features}
        fired = {f.feature: f.test for f in payload.features if f.drifted}
        assert fired in (
            {"_error_rate": "cusum"},
            {"_error_shift": "glr"},
            {"_error_adwin": "adwin"},
        )
        assert by_name["_accuracy"].statistic < by_name["_accuracy"].threshold
        assert not any(f.drifted for f in payload.features if f.test in ("ks", "chi2"))
        assert monitors.get(MODEL).labels_unmatched == 0
    finally:
        for consumer in consumers:
            await consumer.stop()
        await asyncio.gather(*tasks)
        await publisher.stop()
        await serving.stop()
