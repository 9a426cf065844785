"""kill -9 of the monitoring process while 10,000 predictions await their labels: after the
restart every label still joins (0 unmatched) and the error rise is decided exactly as a
monitor that never crashed decides it (the changelog: services/monitoring/adapters/changelog.py).

Real Kafka only: on the embedded broker the test would pass for the wrong reason as much as the
right one (it is memory-only, so the point, state that outlives the process on the broker,
holds only while that one broker process lives, and it takes no compaction setting)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.monitor import ModelMonitor
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MODEL = "churn"
PROFILE_KEY = "artifacts/churn/run1/profile.json"
ROWS = 10_000
BURN_IN = 300


class Registry(registry_pb2_grpc.RegistryServiceServicer):
    """A registry with one model whose production version "1" has PROFILE_KEY (reads only)."""

    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ListModelsResponse(
            models=[registry_pb2.Model(name=MODEL, production_version="1")]
        )

    async def GetModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.Model(name=MODEL, production_version="1")

    async def GetVersion(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ModelVersion(
            model=request.model,
            version=request.version,
            status="production",
            profile_uri=PROFILE_KEY,
        )


def rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(4)})
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


def logged(frame: pd.DataFrame, ids: list[str], ts: float) -> events_pb2.PredictionLog:
    frame = frame.assign(_request_id=ids, _ts=ts + np.arange(len(frame)) * 0.01)
    return events_pb2.PredictionLog(
        model=MODEL,
        version="1",
        row_count=len(frame),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
    )


def start_monitoring(common: CommonSettings, log_name: str) -> Any:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_PORTS__MONITORING": str(common.ports.monitoring),
        "DRIFTLOOP_PORTS__METRICS_MONITORING": str(common.ports.metrics_monitoring),
        "DRIFTLOOP_PORTS__REGISTRY": str(common.ports.registry),
        "DRIFTLOOP_MONITORING_LABEL_BURN_IN_ROWS": str(BURN_IN),
        "DRIFTLOOP_MONITORING_TRIGGERS": '["accuracy"]',
        "DRIFTLOOP_LOG_JSON": "true",
    }
    return start_process(
        [sys.executable, "-m", "driftloop.services.monitoring"],
        env=env,
        log_path=str(common.data_dir.parent / log_name),
    )


async def performance(stub: Any) -> Any:
    try:
        reply = await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model=MODEL))
    except grpc.aio.AioRpcError:
        return None  # not serving yet, or the model not loaded yet
    return reply.performance


@pytest.mark.parametrize("any_broker", ["kafka"], indirect=True)
async def test_kill_9_with_10000_predictions_awaiting_labels_loses_none(
    common: CommonSettings,
) -> None:
    rng = np.random.default_rng(19)
    common.data_dir.mkdir(parents=True, exist_ok=True)
    reference = rows(rng, 4000)
    profile = build_profile(
        MODEL, "1", reference.drop(columns="_prediction"), reference["_prediction"]
    )
    open_object_store(common).put(PROFILE_KEY, profile.to_json())
    await ensure_topics(common.bootstrap())
    registry, _, _ = build_server(
        common,
        common.ports.registry,
        [
            ServiceBinding(
                add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
                servicer=Registry(),
                full_name="driftloop.registry.v1.RegistryService",
            )
        ],
    )
    await registry.start()
    serving = EventPublisher(common.bootstrap(), "serving")
    await serving.start()
    drift: list[envelope.Envelope] = []

    async def on_drift(event: envelope.Envelope) -> None:
        drift.append(event)

    watcher = EventConsumer(
        bootstrap=common.bootstrap(),
        group="t-drift",
        topic_names=[topics.DRIFT],
        publisher=serving,
        on_event=on_drift,
    )
    watching = asyncio.create_task(watcher.run())
    frame = rows(rng, ROWS)
    ids = [uuid.uuid4().hex for _ in range(ROWS)]
    logs = [
        logged(frame.iloc[s : s + 500], ids[s : s + 500], 1_000.0 + s) for s in range(0, ROWS, 500)
    ]
    # The labels: the first 2,000 mostly right, then half of them wrong (an error rise).
    predicted = frame["_prediction"].to_numpy()
    wrong = rng.random(ROWS) < np.r_[np.full(2000, 0.05), np.full(ROWS - 2000, 0.5)]
    truth = np.where(wrong, np.where(predicted == "1", "0", "1"), predicted)
    batches = [
        events_pb2.LabelBatch(
            model=MODEL, request_ids=ids[s : s + 200], labels=truth[s : s + 200].tolist()
        )
        for s in range(0, ROWS, 200)
    ]
    first = start_monitoring(common, "monitoring-1.log")
    second = None
    try:
        await asyncio.wait_for(watcher.ready.wait(), 30)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{common.ports.monitoring}") as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            await wait_for(lambda: performance(stub), 60, "monitoring serving churn")
            for log in logs:
                await serving.publish(topics.PREDICTIONS, MODEL, serving.event(log))

            async def pending() -> bool:
                found = await performance(stub)
                return found is not None and found.pending_predictions == ROWS

            await wait_for(pending, 60, f"{ROWS} predictions awaiting labels")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL

        second = start_monitoring(common, "monitoring-2.log")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{common.ports.monitoring}") as channel:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
            await wait_for(pending, 60, f"{ROWS} predictions restored after kill -9")
            for batch in batches:
                await serving.publish(topics.LABELS, MODEL, serving.event(batch))

            async def all_labelled() -> Any:
                found = await performance(stub)
                return found if found is not None and found.labelled_rows == ROWS else None

            done = await wait_for(all_labelled, 60, "every label joined")
        assert done.unmatched_labels == 0 and done.duplicate_labels == 0
        assert done.pending_predictions == 0
        await wait_for(lambda: drift, 30, "DriftDetected after the restart")
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_process(proc)
        await watcher.stop()
        await watching
        await serving.stop()
        await registry.stop(grace=1)

    # The same rows and labels through a monitor that never crashed decide the same.
    never = ModelMonitor(
        MODEL, DriftPolicy(label_burn_in_rows=BURN_IN, triggers=("accuracy",)), "1", profile
    )
    for s in range(0, ROWS, 500):
        never.observe("1", frame.iloc[s : s + 500].assign(_request_id=ids[s : s + 500]), 0.0)
    decisions = [never.observe_labels(list(b.request_ids), list(b.labels), 0.0) for b in batches]
    expected = next(d for d in decisions if d is not None)
    got = drift[0].drift_detected
    fired = {f.feature: f.statistic for f in got.features if f.drifted}
    assert fired == pytest.approx({f.feature: f.statistic for f in expected.features if f.drifted})
    assert len(drift) == 1
