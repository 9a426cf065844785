"""Drift history across a monitoring restart, and `driftloop drift` against a live servicer.

The handler is fed envelopes directly (the bus path is covered by test_monitoring_service);
DriftDetected is published to the real broker, the history lives in a local object store, and
the "restart" builds monitors, history, handler and gRPC server anew over the same store.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from typer.testing import CliRunner

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.services.monitoring.adapters.grpc import FULL_NAME, MonitoringServicer
from driftloop.services.monitoring.adapters.kafka import MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.history import DriftHistory
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.app import app
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.objectstore import LocalObjectStore, ObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import ModelVersion
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MODEL = "churn"


def one_profile(store: ObjectStore, key: str) -> RegistryProfiles:
    """The real ReferenceSource over the registry fake: version 1 in production, its profile in
    the store under `key`."""
    fake = FakeRegistry()
    fake.put_version(ModelVersion(MODEL, "1", profile_uri=key), alias="production")
    return RegistryProfiles(fake, store)  # type: ignore[arg-type]


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(3)})
    frame["x2"] += shift
    frame["plan"] = rng.choice(["basic", "pro"], n, p=[0.7, 0.3])
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


def logged(publisher: EventPublisher, frame: pd.DataFrame, ts: float) -> events_pb2.Envelope:
    frame = frame.assign(
        _request_id=[uuid.uuid4().hex for _ in range(len(frame))],
        _ts=ts + np.arange(len(frame)) * 0.01,
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return publisher.event(
        events_pb2.PredictionLog(
            model=MODEL, version="1", row_count=len(frame), arrow_ipc=table_to_ipc(table)
        )
    )


async def start(store: ObjectStore, key: str, publisher: EventPublisher, common: CommonSettings):  # type: ignore[no-untyped-def]
    """A fresh monitoring process: monitors, persisted history, handler, gRPC server."""
    monitors = ModelMonitors(DriftPolicy())
    history = DriftHistory(store)
    handler = MonitoringHandler(monitors, publisher, one_profile(store, key), history=history)
    await handler.reconcile()
    binding = ServiceBinding(
        add=monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server,
        servicer=MonitoringServicer(monitors, history),
        full_name=FULL_NAME,
    )
    server, _, port = build_server(common, 0, [binding])
    await server.start()
    return monitors, handler, server, port


async def test_history_survives_a_restart_and_the_cli_shows_it(
    common: CommonSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    store = LocalObjectStore(common.data_dir / "objects")
    ref = rows(rng, 3000)
    profile = build_profile(MODEL, "1", ref.drop(columns="_prediction"), ref["_prediction"])
    key = f"artifacts/{MODEL}/run1/profile.json"
    store.put(key, profile.to_json())
    await ensure_topics(common.bootstrap())
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    await publisher.start()
    try:
        monitors, handler, server, port = await start(store, key, publisher, common)
        for i in range(8):
            await handler.handle(logged(publisher, rows(rng, 100, shift=3.0), 1_000.0 + i))
        first = await _list(port)
        assert len(first.entries) == 1 and first.events[0] == first.entries[0].event
        entry = first.entries[0]
        assert entry.correlation_id and entry.event_id == entry.correlation_id
        assert "x2" in {f.feature for f in entry.event.features if f.drifted}
        assert store.list(f"monitoring/{MODEL}/history/")
        await server.stop(grace=1)

        monitors, handler, server, port = await start(store, key, publisher, common)
        try:
            again = await _list(port)
            assert list(again.entries) == list(first.entries)
            for i in range(8):  # the same drift again: the restored episode mutes it
                await handler.handle(logged(publisher, rows(rng, 100, shift=3.0), 2_000.0 + i))
            assert len((await _list(port)).entries) == 1
            report = monitors.report(MODEL)
            assert report.episode.episode_id == entry.event.episode_id and report.episode.open

            monkeypatch.setenv("DRIFTLOOP_PORTS__MONITORING", str(port))
            page = tmp_path / "report.html"
            args = ["drift", MODEL, "--json", "--html", str(page), "--data-dir", str(tmp_path)]
            result = await asyncio.to_thread(CliRunner().invoke, app, args)
            assert result.exit_code == 0, result.output
            data = json.loads(result.output.strip().splitlines()[-1])
            assert data["report"]["model"] == MODEL and data["report"]["rows_seen"] == 800
            assert [h["event"]["episode_id"] for h in data["history"]] == [entry.event.episode_id]
            assert page.read_text().count("<svg") == len(data["report"]["distributions"]) == 5
            table = await asyncio.to_thread(
                CliRunner().invoke, app, ["drift", MODEL, "--data-dir", str(tmp_path)]
            )
            assert table.exit_code == 0 and "DRIFT" in table.output, table.output
            ghost = await asyncio.to_thread(
                CliRunner().invoke, app, ["drift", "ghost", "--data-dir", str(tmp_path)]
            )
            assert ghost.exit_code == 1 and "NOT_FOUND" in ghost.output
        finally:
            await server.stop(grace=1)
    finally:
        await publisher.stop()


async def _list(port: int) -> monitoring_pb2.ListDriftEventsResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        return await stub.ListDriftEvents(monitoring_pb2.ListDriftEventsRequest(model=MODEL))
