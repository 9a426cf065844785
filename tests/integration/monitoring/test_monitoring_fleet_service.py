"""A fleet through monitoring on a real broker: the fleet's labels reach the partition monitors
that answered each request (the rest the fleet's own monitor), and a drift in several partitions
at once is published as ONE DriftDetected for the fleet listing them (core/fleet_episodes.py).

The registry fake (tests/registry_fake.py) names each partition's production version and profile
and counts the fleet's partitions; the bus and the object store are real.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from registry_fake import FakeRegistry
from support import wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.monitoring.adapters.changelog import PendingChangelog
from driftloop.services.monitoring.adapters.kafka import TOPICS, MonitoringHandler
from driftloop.services.monitoring.adapters.registry import RegistryProfiles
from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet_dispatch import FleetDispatch
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.services.monitoring.core.fleet_thresholds import FleetSizes
from driftloop.services.monitoring.core.monitor import ModelMonitors
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.registry_types import Model, ModelVersion, TrainingSpec
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

FLEET = "arrivals"
PARTITIONS = [f"{FLEET}/route_id={i}" for i in range(5)]
DRIFTING = PARTITIONS[:4]


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(3)})
    frame["x2"] += shift
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


def registry(rng: np.random.Generator, store: LocalObjectStore) -> RegistryProfiles:
    """The fleet, its global model and five partitions, each with a production profile."""
    fake = FakeRegistry()
    fake.put_model(Model(FLEET, "trips", "late", TrainingSpec(partition_by=("route_id",))))
    for model in [FLEET, *PARTITIONS]:
        if model != FLEET:
            fake.put_model(Model(model, "trips", "late", fleet=FLEET))
        reference = rows(rng, 3000)
        profile = build_profile(
            model, "1", reference.drop(columns="_prediction"), reference["_prediction"]
        )
        key = f"artifacts/{model}/1/profile.json"
        store.put(key, profile.to_json())
        fake.put_version(ModelVersion(model, "1", profile_uri=key), "production")
    return RegistryProfiles(fake, store)  # type: ignore[arg-type]


def prediction_log(
    serving: EventPublisher, model: str, frame: pd.DataFrame, ids: list[str], fleet: str
) -> envelope.Envelope:
    frame = frame.assign(_request_id=ids, _ts=1_000.0 + np.arange(len(frame)) * 0.01)
    log = events_pb2.PredictionLog(
        model=model,
        version="1",
        row_count=len(frame),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
        fleet=fleet,
    )
    return serving.event(log)


@pytest.mark.parametrize("any_broker", ["embedded"], indirect=True)
async def test_fleet_labels_reach_partitions_and_a_shared_drift_is_one_fleet_episode(
    common: CommonSettings,
) -> None:
    rng = np.random.default_rng(41)
    store = LocalObjectStore(common.data_dir / "objects")
    profiles = registry(rng, store)
    await ensure_topics(common.bootstrap())
    sizes = FleetSizes(profiles)
    monitors = ModelMonitors(DriftPolicy(), journal=True, scale=sizes.scale)
    # the four partitions decide within a second or two of each other; 10 s holds them all
    rules = FleetEpisodeRules(hold_s=10.0, window_s=60.0, min_partitions=3, fraction=0.1)
    publisher = EventPublisher(common.bootstrap(), "monitoring")
    serving = EventPublisher(common.bootstrap(), "serving")
    handler = MonitoringHandler(
        monitors,
        publisher,
        profiles,
        changelog=PendingChangelog(common.bootstrap()),
        fleets=FleetDispatch(monitors, sizes, rules),
        tick_s=0.2,
    )
    drift: list[envelope.Envelope] = []

    async def on_drift(event: envelope.Envelope) -> None:
        drift.append(event)

    consumers = [
        EventConsumer(
            bootstrap=common.bootstrap(),
            group="monitoring",
            topic_names=TOPICS,
            publisher=publisher,
            on_batch=handler.handle_records,  # as main.py: a poll's changelog in one round
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
    await handler.reconcile()  # starts the changelog
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    timer = asyncio.create_task(handler.run_timer())
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in consumers)), 30)
        # Stationary traffic: every partition answers 250 of the fleet's rows, the global
        # model 100 more (logged as the fleet itself).
        answered: dict[str, list[str]] = {}
        truth: dict[str, str] = {}  # each request's label: its prediction (no error drift)
        for model in [*PARTITIONS, FLEET]:
            n = 100 if model == FLEET else 250
            ids = answered[model] = [uuid.uuid4().hex for _ in range(n)]
            for start in range(0, n, 50):
                part = rows(rng, 50)
                truth.update(zip(ids[start : start + 50], part["_prediction"], strict=True))
                fleet = FLEET if model != FLEET else ""
                event = prediction_log(serving, model, part, ids[start : start + 50], fleet)
                await serving.publish(topics.PREDICTIONS, model, event)

        def observed() -> bool:
            return all(
                monitors.knows(m) and monitors.report(m).rows_seen == len(answered[m])
                for m in answered
            )

        await wait_for(observed, 60, "every partition's and the fleet's rows observed")
        assert sizes.size(FLEET) == 5, "N from the registry's ListModels(fleet=arrivals)"
        assert monitors.get(PARTITIONS[0]).policy.alpha == pytest.approx(1e-4 / 8)

        # The fleet's labels, interleaved, addressed to the fleet as a caller would.
        every = [(m, i) for m, ids in answered.items() for i in ids]
        order = rng.permutation(len(every))
        mixed = [every[k][1] for k in order]
        for start in range(0, len(mixed), 200):
            ids = mixed[start : start + 200]
            labels = [truth[i] for i in ids]
            batch = events_pb2.LabelBatch(model=FLEET, request_ids=ids, labels=labels)
            await serving.publish(topics.LABELS, FLEET, serving.event(batch))

        def labelled() -> bool:
            return all(
                monitors.report(m).performance.labelled_rows == len(ids)
                for m, ids in answered.items()
            )

        await wait_for(labelled, 60, "each label joined at the monitor that answered it")
        for model in answered:
            assert monitors.report(model).performance.unmatched_labels == 0
        # every partition's waiting and joined ids went to the changelog (a restart rebuilds
        # the fleet's index from it)
        restored = await PendingChangelog(common.bootstrap()).read()
        assert {m: len(s) for m, s in restored.items() if m in PARTITIONS} == dict.fromkeys(
            PARTITIONS, 250
        )

        # A city-wide change: four of the five partitions drift at once.
        for model in DRIFTING:
            for _ in range(6):
                ids = [uuid.uuid4().hex for _ in range(50)]
                event = prediction_log(serving, model, rows(rng, 50, 2.5), ids, FLEET)
                await serving.publish(topics.PREDICTIONS, model, event)
        await wait_for(lambda: drift, 60, "a DriftDetected")
        # DRIFT has one partition: once this marker arrives, all published before it has.
        await wait_for(
            lambda: all(monitors.report(m).rows_seen == 550 for m in DRIFTING),
            60,
            "the drifted rows observed",
        )
        marker = serving.event(events_pb2.DriftDetected(model="marker"))
        await serving.publish(topics.DRIFT, "marker", marker)
        await wait_for(lambda: any(e.event_id == marker.event_id for e in drift), 30, "marker")
        detected = [e.drift_detected for e in drift if e.event_id != marker.event_id]
        assert len(detected) == 1, [(d.model, list(d.partitions)) for d in detected]
        fleet_event = detected[0]
        assert fleet_event.model == FLEET and fleet_event.version == "1"
        assert sorted(fleet_event.partitions) == DRIFTING
        assert {f.feature for f in fleet_event.features if f.drifted} == {"x2"}
        assert fleet_event.reasons[0].startswith(f"4 partitions of fleet {FLEET}")
        for model in DRIFTING:
            assert monitors.report(model).open_episode_id == fleet_event.episode_id
        assert monitors.report(PARTITIONS[4]).open_episode_id == ""
    finally:
        timer.cancel()
        for consumer in consumers:
            await consumer.stop()
        await asyncio.gather(*tasks)
        await asyncio.gather(timer, return_exceptions=True)
        await handler.close()
        await publisher.stop()
        await serving.stop()
