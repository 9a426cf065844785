"""Serving with DRIFTLOOP_SERVING_WORKERS=2 as real processes on one port: both workers answer,
all swap to a promoted version, Kafka requests are answered once, metrics merge, and no worker
outlives the parent (SIGTERM, SIGKILL) or a dead sibling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from serving_models import make_pipeline
from support import stack_env, start_process, stop_process, wait_for, wait_until

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from driftloop.services.serving.adapters.grpc import WORKER_METADATA
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

MODEL = "wk"
ARTIFACTS = {
    "1": artifacts.dump_model(make_pipeline()),
    "2": artifacts.dump_model(make_pipeline(seed=1)),
}


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    pids: list[int] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        """The two workers' pids, once the parent has started them."""
        kids = wait_until(
            lambda: len(k := psutil.Process(self.proc.pid).children()) == 2 and k, 30, "2 workers"
        )
        self.pids = sorted(p.pid for p in kids)
        return self.pids

    def running(self) -> bool:
        assert self.proc.poll() is None, f"serving exited with {self.proc.returncode}"
        return True


@contextlib.contextmanager
def serving_workers(common: CommonSettings, log: Path) -> Iterator[Serving]:
    """`python -m driftloop.services.serving` with 2 workers; it and its workers always end."""
    env = {
        **stack_env(common),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_SERVING_WORKERS": "2",
        "DRIFTLOOP_SERVING_RECONCILE_TIMEOUT_S": "0.5",  # no registry runs here
    }
    proc = start_process(
        [sys.executable, "-m", "driftloop.services.serving"], env=env, log_path=str(log)
    )
    serving = Serving(proc)
    try:
        yield serving
    finally:
        stop_process(proc)
        for pid in serving.pids:  # a worker the test's failure left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def probe(port: int) -> tuple[int, str | None]:
    """One fresh connection: (the worker that accepted it, the version it answers, or None)."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a new TCP connection per channel
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
        await call
        worker = int(dict(await call.trailing_metadata() or ())[WORKER_METADATA])
        request = pb.ModelInferRequest(model_name=MODEL)
        for name, datatype, value in (("x1", "FP64", 0.5), ("color", "BYTES", b"red")) + (
            ("x2", "FP64", 0.5),
        ):
            tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
            if datatype == "BYTES":
                tensor.contents.bytes_contents.append(value)  # type: ignore[arg-type]
            else:
                tensor.contents.fp64_contents.append(value)  # type: ignore[arg-type]
        try:
            reply = await stub.ModelInfer(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                return worker, None
            raise
        return worker, reply.model_version


class Promoter:
    """Publishes ModelPromoted as the registry would, again every 2 s while waited on (each
    worker reads driftloop.models from its latest offset, resolved as it starts)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self._at = 0.0

    async def promote(self, version: str) -> None:
        if time.monotonic() - self._at < 2:
            return
        self._at = time.monotonic()
        event = self._publisher.event(
            events_pb2.ModelPromoted(
                model=MODEL,
                version=version,
                artifact_uri=f"artifacts/{MODEL}/r{version}/model.skops",
                artifact_sha256=artifacts.sha256(ARTIFACTS[version]),
                action="promote",
            )
        )
        await self._publisher.publish(topics.MODELS, MODEL, event)


async def every_worker_answers(
    serving: Serving, port: int, promoter: Promoter, version: str
) -> None:
    answered: set[int] = set()

    async def all_answer() -> bool:
        serving.running()
        await promoter.promote(version)
        for _ in range(8):
            worker, served = await probe(port)
            if served == version:
                answered.add(worker)
        return answered == {0, 1}

    await wait_for(all_answer, 40, f"both workers answering v{version} (seen {answered})")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def process_memory(text: str) -> dict[str, float]:
    """worker label -> process_resident_memory_bytes, from the parent's merged metrics."""
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "process_resident_memory_bytes"
        for sample in family.samples
    }


def versions_in_metrics(text: str) -> dict[str, str]:
    """pid -> driftloop_serving_model_version of MODEL, from the parent's merged metrics."""
    found = {}
    for line in text.splitlines():
        if line.startswith("driftloop_serving_model_version{") and f'model="{MODEL}"' in line:
            labels, value = line.rsplit(" ", 1)
            pid = labels.split('pid="', 1)[1].split('"', 1)[0]
            found[pid] = str(int(float(value)))
    return found


def inference_partitions(log: Path) -> dict[int, list[int]]:
    shares = {}
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"inference_partitions"' in line:
            entry = json.loads(line)
            shares[entry["worker"]] = entry["partitions"]
    return shares


async def answer_kafka_requests_once(common: CommonSettings) -> None:
    """Two JSON requests per partition of driftloop.inference.requests: each answered once."""
    consumer = AIOKafkaConsumer(bootstrap_servers=common.bootstrap(), auto_offset_reset="earliest")
    client = AIOKafkaProducer(bootstrap_servers=common.bootstrap())
    await consumer.start()
    await client.start()
    try:
        consumer.assign([TopicPartition(topics.INFERENCE_RESPONSES, p) for p in range(3)])
        ids = [f"k-{p}-{i}" for p in range(3) for i in range(2)]
        for rid in ids:
            body = {
                "id": rid,
                "model_name": MODEL,
                "inputs": [
                    {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.1]},
                    {"name": "color", "shape": [1], "datatype": "BYTES", "data": ["blue"]},
                    {"name": "x2", "shape": [1], "datatype": "FP64", "data": [0.2]},
                ],
            }
            await client.send_and_wait(
                topics.INFERENCE_REQUESTS, json.dumps(body).encode(), partition=int(rid[2])
            )
        answers: list[dict[str, Any]] = []

        async def all_answered() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            answers.extend(json.loads(r.value) for rs in batches.values() for r in rs)
            return {a["id"] for a in answers} == set(ids)

        await wait_for(all_answered, 30, "answers to the Kafka requests")
        assert sorted(a["id"] for a in answers) == sorted(ids), "each request answered once"
        assert all(a.get("model_version") == "1" for a in answers), answers
    finally:
        await client.stop()
        await consumer.stop()


async def test_two_workers_share_the_port_swap_together_and_stop_with_the_parent(
    common: CommonSettings, tmp_path: Path
) -> None:
    await ensure_topics(common.bootstrap())
    store = open_object_store(common)
    for version, data in ARTIFACTS.items():
        store.put(f"artifacts/{MODEL}/r{version}/model.skops", data)
    registry = EventPublisher(common.bootstrap(), "registry")
    await registry.start()
    deployed: list[envelope.Envelope] = []

    async def collect(event: envelope.Envelope) -> None:
        deployed.append(event)

    listener = EventConsumer(
        bootstrap=common.bootstrap(),
        group=None,
        topic_names=[topics.DEPLOYMENTS],
        publisher=registry,
        on_event=collect,
    )
    task = asyncio.create_task(listener.run())
    log = tmp_path / "serving.log"
    port = common.ports.serving
    try:
        with serving_workers(common, log) as serving:
            proc, pids = serving.proc, serving.worker_pids()
            await every_worker_answers(serving, port, Promoter(registry), "1")
            assert inference_partitions(log) == {0: [0, 2], 1: [1]}, "partitions split"
            await answer_kafka_requests_once(common)

            await every_worker_answers(serving, port, Promoter(registry), "2")
            for _ in range(20):  # once a worker answered v2 it never answers v1 again
                assert (await probe(port))[1] == "2"
            instances = {
                e.model_deployed.instance
                for e in deployed
                if e.type == "ModelDeployed" and e.model_deployed.version == "2"
            }
            assert len(instances) == 2, f"each worker reports its own swap: {instances}"
            merged = await wait_for(
                lambda: versions_in_metrics(scrape(common.ports.metrics_serving)), 10, "metrics"
            )
            assert merged == {str(pid): "2" for pid in pids}, merged
            memory = process_memory(scrape(common.ports.metrics_serving))
            assert memory.keys() == {"parent", "0", "1"}, memory
            assert all(rss > 10 << 20 for rss in memory.values()), "each process's own RSS"

            os.kill(proc.pid, signal.SIGTERM)  # the parent alone: it forwards to the workers
            assert proc.wait(30) == 0, log.read_text()[-3000:]
            wait_until(lambda: all(gone(pid) for pid in pids), 10, "workers gone")
    finally:
        await listener.stop()
        await task
        await registry.stop()


async def test_a_dead_worker_takes_the_parent_and_its_sibling_down(
    common: CommonSettings, tmp_path: Path
) -> None:
    await ensure_topics(common.bootstrap())
    log = tmp_path / "serving.log"
    with serving_workers(common, log) as serving:
        proc = serving.proc
        first, second = serving.worker_pids()
        os.kill(second, signal.SIGKILL)
        assert proc.wait(30) == 1, log.read_text()[-3000:]
        wait_until(lambda: gone(first), 10, "the surviving worker stopped too")
    assert '"serving_worker_exited"' in log.read_text()


async def test_no_worker_outlives_a_killed_parent(common: CommonSettings, tmp_path: Path) -> None:
    await ensure_topics(common.bootstrap())
    with serving_workers(common, tmp_path / "serving.log") as serving:
        proc, pids = serving.proc, serving.worker_pids()
        os.kill(proc.pid, signal.SIGKILL)  # no forwarding: PR_SET_PDEATHSIG must do it
        proc.wait(10)
        wait_until(lambda: all(gone(pid) for pid in pids), 30, "orphaned workers gone")


def test_a_taken_port_fails_at_once_instead_of_being_shared(
    common: CommonSettings, tmp_path: Path
) -> None:
    """SO_REUSEPORT would let workers join a stale listener; the parent probes the port first."""
    log = tmp_path / "serving.log"
    with socket.create_server(("127.0.0.1", common.ports.serving)):
        with serving_workers(common, log) as serving:
            assert serving.proc.wait(30) != 0
    text = log.read_text()
    assert "already in use" in text and "serving_worker_started" not in text, text[-2000:]
