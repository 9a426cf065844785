"""Two monitoring instances in one consumer group over 4-partition topics on Apache Kafka: each
monitors the models of its partitions (predictions and labels of one partition on one member);
kill -9 one of them once its predictions are committed, and the survivor, assigned the killed
one's partitions, restores their predictions awaiting labels from the changelog, so every
label sent afterwards joins (adapters/moves.py). Before that, a deployment of every model
reaches the instance monitoring it, whichever member the group gave the deployments partition.
And a second instance joining a live one takes its partitions' models with their state.

The predictions are committed before the kill, so none is delivered again: the survivor can
only hold them through the changelog. Real Kafka only, as test_monitoring_restart_pending.py
says (state on the broker that outlives a process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import kafka_broker
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient
from conftest import free_ports
from scale_out_checks import nothing_left, two_members_share
from support import start_process, stop_process, wait_for

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.services.monitoring.adapters.changelog import partition_of
from driftloop.shared.bus import topics
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import ServiceBinding, build_server
from driftloop.shared.profile import build_profile
from driftloop.shared.records import table_to_ipc
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings, KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 4
GROUP = "monitoring"
ROWS = 300
"""Predictions per model, all awaiting their labels at the kill."""


def models_over_every_partition(per_partition: int = 2) -> list[str]:
    """Model names, `per_partition` on each partition (by the producer's murmur2)."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(names) < per_partition for names in found.values()):
        name = f"model-{i}"
        names = found[partition_of(name, PARTITIONS)]
        if len(names) < per_partition:
            names.append(name)
        i += 1
    return sorted(n for names in found.values() for n in names)


MODELS = models_over_every_partition()


def profile_key(model: str) -> str:
    return f"artifacts/{model}/run1/profile.json"


class Registry(registry_pb2_grpc.RegistryServiceServicer):
    """A registry whose MODELS each have production version `production` (reads only; every
    version has the model's profile)."""

    def __init__(self) -> None:
        self.production = "1"

    async def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ListModelsResponse(
            models=[registry_pb2.Model(name=m, production_version=self.production) for m in MODELS]
        )

    async def GetModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.Model(name=request.name, production_version=self.production)

    async def GetVersion(self, request: Any, context: Any) -> Any:  # noqa: N802
        return registry_pb2.ModelVersion(
            model=request.model,
            version=request.version,
            status="production",
            profile_uri=profile_key(request.model),
        )


def rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    frame = pd.DataFrame({f"x{i}": rng.normal(0.0, 1.0, n) for i in range(3)})
    frame["_prediction"] = np.where(frame["x0"] > 0, "1", "0")
    return frame


def prediction_log(
    model: str, version: str, frame: pd.DataFrame, ids: list[str]
) -> events_pb2.PredictionLog:
    frame = frame.assign(_request_id=ids, _ts=1_000.0 + np.arange(len(frame)) * 0.01)
    return events_pb2.PredictionLog(
        model=model,
        version=version,
        row_count=len(frame),
        arrow_ipc=table_to_ipc(pa.Table.from_pandas(frame, preserve_index=False)),
    )


@pytest.fixture
def settings(tmp_path: Path, real_kafka: str) -> Iterator[CommonSettings]:
    """Fresh topics of PARTITIONS partitions (deleted again afterwards)."""
    kafka_broker.delete_topics(real_kafka)
    yield CommonSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap=real_kafka,
        ports=free_ports(),
        kafka=KafkaSettings(partitions=PARTITIONS),
        log_json=True,
    )
    kafka_broker.delete_topics(real_kafka)


def start_monitoring(common: CommonSettings, name: str) -> tuple[Any, str]:
    """A monitoring process in the group on ports of its own; (process, gRPC address)."""
    ports = free_ports()
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_KAFKA__PARTITIONS": str(PARTITIONS),
        "DRIFTLOOP_CONSUMER_GROUP_MEMBERSHIP": "true",
        "DRIFTLOOP_PORTS__MONITORING": str(ports.monitoring),
        "DRIFTLOOP_PORTS__METRICS_MONITORING": str(ports.metrics_monitoring),
        "DRIFTLOOP_PORTS__REGISTRY": str(common.ports.registry),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.monitoring"],
        env=env,
        log_path=str(common.data_dir.parent / f"{name}.log"),
    )
    return proc, f"127.0.0.1:{ports.monitoring}"


async def report(stub: Any, model: str) -> Any:
    """The model's drift report on this instance; None where it is not monitored (moved)."""
    try:
        return await stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(model=model))
    except grpc.aio.AioRpcError:
        return None


async def performance(stub: Any, model: str) -> Any:
    found = await report(stub, model)
    return None if found is None else found.performance


async def holders(stubs: list[Any]) -> dict[str, list[tuple[int, Any]]]:
    """Model -> [(instance, its drift report)] of the instances that monitor it."""
    found: dict[str, list[tuple[int, Any]]] = {m: [] for m in MODELS}
    for model in MODELS:
        for i, stub in enumerate(stubs):
            got = await report(stub, model)
            if got is not None:
                found[model].append((i, got))
    return found


def co_assigned(bootstrap: str) -> bool:
    """Whether each member of the group owns the same partitions of predictions and labels."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([GROUP])[GROUP].result()

    def owned(member: Any, topic: str) -> set[int]:
        return {tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}

    return all(owned(m, topics.PREDICTIONS) == owned(m, topics.LABELS) for m in described.members)


def one_member_owns_all(bootstrap: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([GROUP])[GROUP].result()
    return (
        str(described.state).endswith("STABLE")
        and len(described.members) == 1
        and {
            tp.partition
            for tp in described.members[0].assignment.topic_partitions
            if tp.topic == topics.PREDICTIONS
        }
        == set(range(PARTITIONS))
    )


class Traffic:
    """Each model's rows, request ids and labels (the labels are the predictions)."""

    def __init__(self, rng: np.random.Generator, version: str) -> None:
        self.version = version
        """The version serving logs the predictions of."""
        self.frames = {m: rows(rng, ROWS) for m in MODELS}
        self.ids = {m: [uuid.uuid4().hex for _ in range(ROWS)] for m in MODELS}

    async def predictions(self, serving: EventPublisher) -> None:
        for model in MODELS:
            for s in range(0, ROWS, 100):
                log = prediction_log(
                    model,
                    self.version,
                    self.frames[model].iloc[s : s + 100],
                    self.ids[model][s : s + 100],
                )
                await serving.publish(topics.PREDICTIONS, model, serving.event(log))

    async def labels(self, serving: EventPublisher) -> None:
        for model in MODELS:
            truth = self.frames[model]["_prediction"].tolist()
            for s in range(0, ROWS, 100):
                batch = events_pb2.LabelBatch(
                    model=model, request_ids=self.ids[model][s : s + 100], labels=truth[s : s + 100]
                )
                await serving.publish(topics.LABELS, model, serving.event(batch))


@contextlib.asynccontextmanager
async def registry_and_serving(common: CommonSettings) -> AsyncIterator[tuple[Registry, Any]]:
    """Every model's profile in the store, the topics, a registry on its port and a publisher
    standing in for serving; stopped afterwards."""
    rng = np.random.default_rng(7)
    common.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_object_store(common)
    for model in MODELS:
        reference = rows(rng, 1000)
        profile = build_profile(
            model, "1", reference.drop(columns="_prediction"), reference["_prediction"]
        )
        store.put(profile_key(model), profile.to_json())
    await ensure_topics(common.kafka_connection())
    versions = Registry()
    registry, _, _ = build_server(
        common,
        common.ports.registry,
        [
            ServiceBinding(
                add=registry_pb2_grpc.add_RegistryServiceServicer_to_server,
                servicer=versions,
                full_name="driftloop.registry.v1.RegistryService",
            )
        ],
    )
    await registry.start()
    serving = EventPublisher(common.bootstrap(), "serving")
    await serving.start()
    try:
        yield versions, serving
    finally:
        await serving.stop()
        await registry.stop(grace=1)


@contextlib.asynccontextmanager
async def instances(common: CommonSettings, names: list[str]) -> AsyncIterator[Instances]:
    """Monitoring processes and their gRPC stubs; every process stopped afterwards."""
    running = Instances(common)
    try:
        for name in names:
            running.start(name)
        yield running
    finally:
        await running.stop()


class Instances:
    def __init__(self, common: CommonSettings) -> None:
        self._common = common
        self.processes: list[Any] = []
        self._channels: list[Any] = []
        self.stubs: list[Any] = []

    def start(self, name: str) -> None:
        proc, address = start_monitoring(self._common, name)
        self.processes.append(proc)
        self._channels.append(grpc.aio.insecure_channel(address))
        self.stubs.append(monitoring_pb2_grpc.MonitoringServiceStub(self._channels[-1]))

    async def stop(self) -> None:
        for proc in self.processes:
            stop_process(proc)
        for channel in self._channels:
            await channel.close()

    async def each_model_once(self, pending: int | None = None) -> dict[str, int]:
        """Model -> the instance monitoring it, once each model is on exactly one (with
        `pending` predictions awaiting labels, if given)."""

        async def found() -> dict[str, int] | None:
            held = await holders(self.stubs)
            if not all(len(h) == 1 for h in held.values()):
                return None
            if pending is not None and any(
                h[0][1].performance.pending_predictions != pending for h in held.values()
            ):
                return None
            return {m: h[0][0] for m, h in held.items()}

        return await wait_for(found, 60, f"each model on one instance, {pending} pending")

    async def all_labelled(self) -> dict[str, Any]:
        """Model -> its performance once every label of it joined on its instance."""

        async def done() -> dict[str, Any] | None:
            held = await holders(self.stubs)
            if not all(len(h) == 1 for h in held.values()):
                return None
            found = {m: h[0][1].performance for m, h in held.items()}
            return found if all(p.labelled_rows == ROWS for p in found.values()) else None

        return await wait_for(done, 60, "every label joined")


def assert_joined(performances: dict[str, Any]) -> None:
    for model, got in performances.items():
        assert got.unmatched_labels == 0, model
        assert got.duplicate_labels == 0, model
        assert got.pending_predictions == 0, model


async def committed(real_kafka: str) -> None:
    """Every prediction committed: none is delivered again to whoever reads its partition
    next, which then holds them only through the changelog."""
    await wait_for(
        lambda: asyncio.to_thread(nothing_left, real_kafka, GROUP, topics.PREDICTIONS, PARTITIONS),
        60,
        "predictions committed",
    )


async def two_members(real_kafka: str) -> None:
    await wait_for(
        lambda: asyncio.to_thread(
            two_members_share, real_kafka, GROUP, topics.PREDICTIONS, PARTITIONS
        ),
        120,
        "two monitoring members sharing the partitions",
    )
    assert await asyncio.to_thread(co_assigned, real_kafka)


async def test_a_killed_instances_pending_predictions_move_to_the_survivor(
    settings: CommonSettings, real_kafka: str
) -> None:
    traffic = Traffic(np.random.default_rng(19), version="2")
    async with (
        registry_and_serving(settings) as (versions, serving),
        instances(settings, ["monitoring-1", "monitoring-2"]) as running,
    ):
        await two_members(real_kafka)
        owners = await running.each_model_once()
        assert set(owners.values()) == {0, 1}, "both instances hold models"

        # a deployment reaches its model's instance, whichever member reads its partition
        versions.production = "2"
        for model in MODELS:
            deployed = events_pb2.ModelDeployed(model=model, version="2", previous_version="1")
            await serving.publish(topics.DEPLOYMENTS, model, serving.event(deployed))

        async def deployed_everywhere() -> bool:
            found = await holders(running.stubs)
            return all(len(h) == 1 and h[0][1].version == "2" for h in found.values())

        await wait_for(deployed_everywhere, 60, "version 2 monitored, each model once")
        assert await running.each_model_once() == owners

        await traffic.predictions(serving)
        assert await running.each_model_once(pending=ROWS) == owners
        await committed(real_kafka)

        victim = running.processes[1]
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        assert victim.returncode == -signal.SIGKILL
        await wait_for(
            lambda: asyncio.to_thread(one_member_owns_all, real_kafka),
            90,
            "the survivor owns every partition",
        )
        survivor = running.stubs[:1]

        async def survivor_holds_all() -> bool:
            found = await holders(survivor)
            return all(
                len(h) == 1 and h[0][1].performance.pending_predictions == ROWS
                for h in found.values()
            )

        moved = sorted(m for m, i in owners.items() if i == 1)
        await wait_for(survivor_holds_all, 60, f"the survivor holds {moved}'s predictions")

        await traffic.labels(serving)
        running.stubs[1:] = []  # the killed one answers nothing
        assert_joined(await running.all_labelled())


async def test_partitions_handed_to_a_new_instance_take_their_pending_predictions(
    settings: CommonSettings, real_kafka: str
) -> None:
    """Scale-out of a live instance: the partitions the group hands to the newcomer leave the
    first instance (revoked: its changes flushed; forgotten at the assignment), and the
    newcomer restores them from the changelog."""
    traffic = Traffic(np.random.default_rng(20), version="1")
    async with (
        registry_and_serving(settings) as (_, serving),
        instances(settings, ["monitoring-1"]) as running,
    ):
        await wait_for(
            lambda: asyncio.to_thread(one_member_owns_all, real_kafka),
            90,
            "the first instance owns every partition",
        )
        assert set((await running.each_model_once()).values()) == {0}
        await traffic.predictions(serving)
        await running.each_model_once(pending=ROWS)
        await committed(real_kafka)

        running.start("monitoring-2")
        await two_members(real_kafka)
        owners = await running.each_model_once(pending=ROWS)
        assert set(owners.values()) == {0, 1}, "the newcomer took models with their state"

        await traffic.labels(serving)
        assert_joined(await running.all_labelled())
