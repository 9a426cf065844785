"""Partition models at fleet scale (core/model_cache.py): not deployed at start, loaded once on
their first request however many ask at once, evicted least recently used under the memory
budget with no failed request, a promotion of a cold one only recorded, a loaded one swapped;
a load that fails falls back to the global model. Real tiny ridge regressors, a fake registry."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import (
    FLEET,
    FleetModels,
    FleetServing,
    artifact_key,
    fleet_regressor,
)

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.compiled_form import CompiledForm
from driftloop.services.serving.core.model_cache import (
    ONNX_GRAPH_FACTOR,
    ONNX_SESSION_BYTES,
    estimated_bytes,
)
from driftloop.shared.bus import envelope
from driftloop.shared.registry_types import ModelVersion

pytestmark = pytest.mark.unit

ROUTES = (1, 2, 3, 4)
PART = {r: f"{FLEET}/route_id={r}" for r in ROUTES}
PIPELINES = {r: fleet_regressor(100.0 * r) for r in ROUTES}
GLOBAL = fleet_regressor(1000.0)
NEW_ROUTE_1 = fleet_regressor(500.0)


def fleet(routes: tuple[int, ...] = ROUTES) -> FleetModels:
    models = FleetModels()
    models.add(FLEET, "1", GLOBAL)
    for r in routes:
        models.add(PART[r], "1", PIPELINES[r])
    return models


def request(route: int, x1: float = 0.5, x2: float = -1.0, model: str = FLEET) -> Any:
    req = pb.ModelInferRequest(model_name=model, id=f"r{route}")
    req.inputs.add(name="route_id", datatype="INT64", shape=[1]).contents.int64_contents.append(
        route
    )
    req.inputs.add(name="x1", datatype="FP64", shape=[1]).contents.fp64_contents.append(x1)
    req.inputs.add(name="x2", datatype="FP64", shape=[1]).contents.fp64_contents.append(x2)
    return converters.to_inference_request(req)


async def answer(s: FleetServing, route: int) -> float:
    result = await s.service.infer_async(request(route))
    return float(result.outputs[0].data[0])


def predicted(pipeline: Any, x1: float = 0.5, x2: float = -1.0) -> float:
    return float(pipeline.predict(pd.DataFrame({"x1": [x1], "x2": [x2]}))[0])


def count(metric: Any) -> float:
    return float(metric.labels(FLEET)._value.get())


def loads() -> float:
    """Lazy loads so far (the load-seconds histogram's count)."""
    samples = metrics.PARTITION_LOAD_SECONDS.collect()[0].samples
    found = [x.value for x in samples if x.name.endswith("_count") and x.labels["fleet"] == FLEET]
    return float(found[0]) if found else 0.0


def fetched(s: FleetServing, route: int) -> int:
    return sum(1 for key in s.models.store.fetched if key.startswith(f"artifacts/{PART[route]}/"))


def budget_for(models: FleetModels, fits: int) -> int:
    """Bytes that hold `fits` of the partition models but not one more (estimate: the
    artifact's size, no compiled form)."""
    sizes = sorted(
        len(blob)
        for key, blob in models.store.objects.items()
        if key.startswith(f"artifacts/{FLEET}/")
    )
    assert sum(sizes[-fits:]) < sum(sizes[: fits + 1])
    return sum(sizes[-fits:])


async def test_partitions_are_not_loaded_at_start_but_on_their_first_request() -> None:
    s = await FleetServing(fleet()).start()
    assert s.models.store.fetched == [artifact_key(FLEET, "1")]
    assert s.slot.models() == [FLEET] and s.cache.partitions(FLEET) == sorted(PART.values())
    misses, hits = count(metrics.PARTITION_MISSES), count(metrics.PARTITION_HITS)
    assert await answer(s, 2) == pytest.approx(predicted(PIPELINES[2]))
    assert await answer(s, 2) == pytest.approx(predicted(PIPELINES[2]))
    assert fetched(s, 2) == 1 and s.cache.loaded() == [PART[2]]
    assert count(metrics.PARTITION_MISSES) == misses + 1
    assert count(metrics.PARTITION_HITS) == hits + 1
    # a version known from reconcile alone: its artifact is asked of the registry on load
    assert s.models.registry.calls["GetVersion"] == 2  # the global model's, then route 2's


async def test_concurrent_first_requests_share_one_load() -> None:
    s = await FleetServing(fleet(), batching=True).start()
    s.models.store.gate = asyncio.Event()
    before_loads, misses = loads(), count(metrics.PARTITION_MISSES)
    asks = [asyncio.ensure_future(answer(s, 3)) for _ in range(8)]
    while not s.models.store.fetched[1:]:
        await asyncio.sleep(0)  # poll: until the one load reached the store
    s.models.store.gate.set()
    answers = await asyncio.gather(*asks)
    assert answers == [pytest.approx(predicted(PIPELINES[3]))] * 8
    assert fetched(s, 3) == 1 and loads() == before_loads + 1
    assert count(metrics.PARTITION_MISSES) == misses + 8


async def test_least_recently_used_partitions_are_evicted_under_the_budget() -> None:
    models = fleet()
    s = await FleetServing(models, budget_bytes=budget_for(models, 2)).start()
    evictions = count(metrics.PARTITION_EVICTIONS)
    for route in (1, 2, 3):
        assert await answer(s, route) == pytest.approx(predicted(PIPELINES[route]))
    assert s.cache.loaded() == [PART[2], PART[3]]  # route 1 was the least recently used
    await answer(s, 2)  # a hit: route 3 is now the least recently used
    await answer(s, 4)
    assert s.cache.loaded() == [PART[2], PART[4]]
    assert count(metrics.PARTITION_EVICTIONS) == evictions + 2
    assert s.slot.models() == sorted([FLEET, PART[2], PART[4]])
    assert s.cache.loaded_bytes <= s.cache.budget_bytes
    assert metrics.PARTITION_MODEL_BYTES._value.get() == s.cache.loaded_bytes
    assert metrics.PARTITION_MODELS_LOADED._value.get() == 2
    assert await answer(s, 1) == pytest.approx(predicted(PIPELINES[1]))  # loaded again
    assert fetched(s, 1) == 2


async def test_a_partition_alone_over_budget_still_serves() -> None:
    s = await FleetServing(fleet(), budget_bytes=1).start()
    assert await answer(s, 1) == pytest.approx(predicted(PIPELINES[1]))
    assert await answer(s, 2) == pytest.approx(predicted(PIPELINES[2]))
    assert s.cache.loaded() == [PART[2]]


async def test_requests_never_fail_while_partitions_are_evicted_and_swapped() -> None:
    models = fleet()
    s = await FleetServing(models, budget_bytes=budget_for(models, 2), batching=True).start()
    sha = models.add(PART[1], "2", NEW_ROUTE_1, production=False)
    routes = [ROUTES[i % 4] for i in range(120)]

    async def promote_midway() -> None:
        while len(s.sink.logs) + s.logger.pending_rows < 30:
            await asyncio.sleep(0)  # poll: let some requests through first
        await s.events.handle(promoted(PART[1], "2", sha))

    results = await asyncio.gather(*(answer(s, r) for r in routes), promote_midway())
    answers = results[:-1]
    assert len(answers) == 120 and all(np.isfinite(answers))
    for route, got in zip(routes, answers, strict=True):
        allowed = [predicted(PIPELINES[route])] + ([predicted(NEW_ROUTE_1)] if route == 1 else [])
        assert any(got == pytest.approx(a) for a in allowed)
    assert await answer(s, 1) == pytest.approx(predicted(NEW_ROUTE_1))


def promoted(model: str, version: str, sha: str) -> envelope.Envelope:
    payload = events_pb2.ModelPromoted(
        model=model,
        version=version,
        artifact_uri=artifact_key(model, version),
        artifact_sha256=sha,
        action="promote",
    )
    return envelope.new_event("registry", payload, correlation_id="corr-p")


async def test_a_promotion_of_a_cold_partition_only_records_what_loads_next() -> None:
    models = fleet()
    s = await FleetServing(models).start()
    sha = models.add(PART[1], "2", NEW_ROUTE_1, production=False)
    cause = promoted(PART[1], "2", sha)
    await s.events.handle(cause)
    assert fetched(s, 1) == 0 and not s.slot.has(PART[1])
    [(topic, key, deployed)] = [sent for sent in s.published.sent if sent[1] == PART[1]]
    assert (topic, key, deployed.causation_id) == ("driftloop.deployments", PART[1], cause.event_id)
    d = deployed.model_deployed
    assert (d.version, d.previous_version, d.load_seconds) == ("2", "1", 0.0)
    assert await answer(s, 1) == pytest.approx(predicted(NEW_ROUTE_1))
    assert fetched(s, 1) == 1 and s.models.registry.calls["GetVersion"] == 1  # only the global's


async def test_a_promotion_of_a_loaded_partition_swaps_it_and_keeps_one_version() -> None:
    models = fleet()
    s = await FleetServing(models).start()
    assert await answer(s, 1) == pytest.approx(predicted(PIPELINES[1]))
    before = s.cache.loaded_bytes
    sha = models.add(PART[1], "2", NEW_ROUTE_1, production=False)
    await s.events.handle(promoted(PART[1], "2", sha))
    assert s.slot.versions(PART[1]) == ["2"]  # a partition keeps no previous version
    assert await answer(s, 1) == pytest.approx(predicted(NEW_ROUTE_1))
    assert s.cache.loaded_bytes == len(models.store.objects[artifact_key(PART[1], "2")])
    assert before == len(models.store.objects[artifact_key(PART[1], "1")])
    [(_, _, deployed)] = [sent for sent in s.published.sent if sent[1] == PART[1]]
    assert deployed.model_deployed.previous_version == "1"


async def test_reconcile_swaps_a_loaded_partition_and_records_a_cold_one() -> None:
    models = fleet()
    s = await FleetServing(models).start()
    await answer(s, 1)
    models.add(PART[1], "2", NEW_ROUTE_1)
    models.add(PART[2], "2", NEW_ROUTE_1)
    await s.reconciler.reconcile_once()
    assert s.slot.production_version(PART[1]) == "2" and not s.slot.has(PART[2])
    assert s.cache.wanted(PART[2]) is not None and s.cache.wanted(PART[2]).version == "2"


async def test_a_partition_that_cannot_load_falls_back_to_the_global_model() -> None:
    models = fleet()
    models.registry.put_version(
        ModelVersion(PART[1], "2", "", artifact_key(PART[1], "1"), "0" * 64), "production"
    )
    s = await FleetServing(models).start()
    failures = count(metrics.PARTITION_LOAD_FAILURES)
    assert await answer(s, 1) == pytest.approx(predicted(GLOBAL))
    assert await answer(s, 1) == pytest.approx(predicted(GLOBAL))
    assert count(metrics.PARTITION_LOAD_FAILURES) == failures + 1  # refused once, not retried
    assert fetched(s, 1) == 1


async def test_the_estimate_is_the_artifact_plus_an_onnx_session() -> None:
    models = fleet((1,))
    s = await FleetServing(models, compiled=True).start()
    await answer(s, 1)
    loaded = s.slot.get(PART[1])
    assert isinstance(loaded.numeric, CompiledForm) and loaded.numeric.graph_bytes > 0
    size = len(models.store.objects[artifact_key(PART[1], "1")])
    graph = int(ONNX_GRAPH_FACTOR * loaded.numeric.graph_bytes)
    assert estimated_bytes(loaded) == size + ONNX_SESSION_BYTES + graph
    assert s.cache.loaded_bytes == estimated_bytes(loaded)
    assert loaded.artifact_bytes == size
