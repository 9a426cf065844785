"""Shadow serving: a shadow version scores a copy of live traffic off the hot path, logged under
its own version with the production request ids; the answers are production's, unchanged; a full
shadow queue drops rows without failing requests; the shadow loads the safe way and a promotion
of the shadow is an instant swap; a rejection (or reconcile) clears it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from registry_fake import FakeRegistry
from serving_models import make_pipeline

from driftloop.protos.events.v1 import events_pb2
from driftloop.services.serving.adapters.kafka import ModelEvents
from driftloop.services.serving.adapters.registry import RegistryVersions
from driftloop.services.serving.core import codec, metrics
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.reconcile import Reconciler
from driftloop.services.serving.core.shadow import ShadowScorer
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.bus import envelope
from driftloop.shared.errors import ArtifactRejected
from driftloop.shared.records import ipc_to_table
from driftloop.shared.registry_types import ModelVersion

pytestmark = pytest.mark.unit

PROD = make_pipeline()
SHADOW = make_pipeline(seed=3)
PROD_BYTES = artifacts.dump_model(PROD)
SHADOW_BYTES = artifacts.dump_model(SHADOW)


class Sink:
    def __init__(self) -> None:
        self.logs: list[tuple[str, str, dict[str, list[Any]]]] = []

    async def __call__(self, model: str, version: str, ipc: bytes, rows: int) -> None:
        self.logs.append((model, version, ipc_to_table(ipc).to_pydict()))


def loaded(version: str, pipeline: Any) -> LoadedModel:
    return LoadedModel("m", version, pipeline, artifacts.signature(pipeline), f"sha{version}")


def req(rid: str, n: int, x1: float = 0.5) -> codec.InferenceRequest:
    return codec.InferenceRequest(
        "m",
        "",
        rid,
        (
            codec.InputTensor("x1", "FP64", (n,), {"fp64_contents": [x1 + i for i in range(n)]}),
            codec.InputTensor("color", "BYTES", (n,), {"bytes_contents": [b"red"] * n}),
            codec.InputTensor("x2", "FP64", (n,), {"fp64_contents": [1.0] * n}),
        ),
    )


def service(max_rows: int = 1000) -> tuple[InferenceService, ShadowScorer, Sink, Sink]:
    slot = ModelSlot()
    slot.swap(loaded("1", PROD))
    live, shadow_sink = Sink(), Sink()
    scorer = ShadowScorer(slot, PredictionLogger(shadow_sink), max_rows=max_rows)
    inference = InferenceService(
        slot, PredictionLogger(live), batching=BatchPolicy(max_batch_size=64), shadow=scorer
    )
    return inference, scorer, live, shadow_sink


async def test_shadow_is_logged_under_its_version_with_the_same_ids_and_answers_unchanged() -> None:
    inference, scorer, live, shadow_sink = service()
    plain = InferenceService(inference.slot)
    requests = [req("a", 1, -2.0), req("", 2, 0.1), req("c", 3, -1.0)]
    expected = [list(plain.infer(r).outputs[0].data) for r in requests]
    before = metrics.SHADOW_ROWS.labels("m", "2")._value.get()

    inference.slot.set_shadow(loaded("2", SHADOW))
    answers = await asyncio.gather(*(inference.infer_async(r) for r in requests))
    assert [a.version for a in answers] == ["1", "1", "1"]  # the shadow never answers
    assert [list(a.outputs[0].data) for a in answers] == expected
    assert inference.slot.get("m").version == "1" and inference.slot.versions("m") == ["1"]

    await scorer.drain()
    for logger in (inference._logger, scorer._logger):
        assert logger is not None
        await logger.flush()
    [(model, version, prod)] = live.logs
    [(s_model, s_version, shadow)] = shadow_sink.logs
    assert (model, version, s_model, s_version) == ("m", "1", "m", "2")
    assert shadow["_request_id"] == prod["_request_id"] and len(prod["_request_id"]) == 6
    assert prod["_request_id"][0] == "a" and prod["_request_id"][1].endswith(":0")
    assert shadow["x1"] == prod["x1"] and shadow["_ts"] == prod["_ts"]
    frame = codec.rows_frame(
        [codec.decode_rows(r, inference.slot.get("m").signature) for r in requests],
        inference.slot.get("m").feature_index,
    )
    assert shadow["_prediction"] == list(SHADOW.predict(frame))
    assert metrics.SHADOW_ROWS.labels("m", "2")._value.get() == before + 6


async def test_a_full_shadow_queue_drops_rows_and_never_fails_a_request() -> None:
    inference, scorer, live, shadow_sink = service(max_rows=2)
    inference.slot.set_shadow(loaded("2", SHADOW))
    dropped = metrics.SHADOW_ROWS_DROPPED.labels("m", "queue_full")
    before = dropped._value.get()
    first = inference.infer(req("a", 2))
    second = inference.infer(req("b", 3))  # the queue holds 2 rows: these 3 are skipped
    assert (first.version, second.version) == ("1", "1")
    assert len(second.outputs[0].data) == 3
    assert dropped._value.get() == before + 3 and scorer.pending_rows == 2
    await scorer.drain()
    assert scorer.pending_rows == 0


async def test_a_failing_shadow_is_counted_and_production_is_unaffected() -> None:
    inference, scorer, _, shadow_sink = service()
    broken = LoadedModel("m", "9", object(), artifacts.signature(SHADOW), "x")
    inference.slot.set_shadow(broken)
    failed = metrics.SHADOW_ROWS_DROPPED.labels("m", "score_failed")
    before = failed._value.get()
    assert inference.infer(req("a", 1)).version == "1"
    await scorer.drain()
    assert failed._value.get() == before + 1 and shadow_sink.logs == []


class Store:
    def __init__(self) -> None:
        self.objects = {"k/1": PROD_BYTES, "k/2": SHADOW_BYTES}
        self.fetched: list[str] = []

    async def fetch(self, key: str) -> bytes:
        self.fetched.append(key)
        return self.objects[key]


async def load(data: bytes, sha256: str) -> Any:
    return await asyncio.to_thread(artifacts.load_model, data, sha256)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[envelope.Envelope] = []

    def event(self, payload: Any, **kw: Any) -> envelope.Envelope:
        return envelope.new_event("serving", payload, **kw)

    async def publish(self, topic: str, key: str, event: envelope.Envelope) -> None:
        self.sent.append(event)


def registry_event(payload: Any) -> envelope.Envelope:
    return envelope.new_event("registry", payload)


async def test_shadow_loads_safely_and_its_promotion_is_an_instant_swap() -> None:
    store = Store()
    d = Deployer(ModelSlot(), store.fetch, load)
    publisher = Publisher()
    events = ModelEvents(d, publisher, "h:1")  # type: ignore[arg-type]
    await d.deploy("m", "1", "k/1", artifacts.sha256(PROD_BYTES))

    bad = events_pb2.ModelShadowed(model="m", version="2", artifact_uri="k/2")
    bad.artifact_sha256 = "0" * 64
    await events.handle(registry_event(bad))  # hash mismatch: refused, nothing changes
    assert d.slot.shadow("m") is None and d.slot.get("m").version == "1"
    with pytest.raises(ArtifactRejected):
        await d.deploy_shadow("m", "2", "k/2", "0" * 64)

    good = events_pb2.ModelShadowed(
        model="m", version="2", artifact_uri="k/2", artifact_sha256=artifacts.sha256(SHADOW_BYTES)
    )
    await events.handle(registry_event(good))
    shadow = d.slot.shadow("m")
    assert shadow is not None and shadow.version == "2"
    assert d.slot.versions("m") == ["1"] and not d.slot.has("m", "2")  # requests cannot reach it
    fetches = len(store.fetched)

    promoted = events_pb2.ModelPromoted(
        model="m",
        version="2",
        artifact_uri="k/2",
        artifact_sha256=artifacts.sha256(SHADOW_BYTES),
        action="promote",
    )
    await events.handle(registry_event(promoted))
    assert len(store.fetched) == fetches  # already loaded: no fetch, instant swap
    assert d.slot.get("m") is shadow and d.slot.shadow("m") is None
    assert [e.type for e in publisher.sent] == ["ModelDeployed"]


async def test_rejection_and_reconcile_clear_or_load_the_shadow() -> None:
    store = Store()
    d = Deployer(ModelSlot(), store.fetch, load)
    events = ModelEvents(d, Publisher(), "h:1")  # type: ignore[arg-type]
    sha1, sha2 = artifacts.sha256(PROD_BYTES), artifacts.sha256(SHADOW_BYTES)

    fake = FakeRegistry()
    fake.put_version(ModelVersion("m", "1", artifact_uri="k/1", artifact_sha256=sha1), "production")
    fake.put_version(ModelVersion("m", "2", artifact_uri="k/2", artifact_sha256=sha2), "shadow")
    registry = RegistryVersions(fake)  # type: ignore[arg-type]
    reconciler = Reconciler(d, events, registry, interval_s=5, shadows=registry)
    await reconciler.reconcile_once()
    shadow = d.slot.shadow("m")
    assert d.slot.get("m").version == "1" and shadow is not None and shadow.version == "2"

    other = events_pb2.ModelRejected(model="m", version="7", reason="not the shadow")
    await events.handle(registry_event(other))
    assert d.slot.shadow("m") is not None
    await events.handle(registry_event(events_pb2.ModelRejected(model="m", version="2")))
    assert d.slot.shadow("m") is None

    await reconciler.reconcile_once()  # the registry still says 2: loaded again
    assert d.slot.shadow("m") is not None
    await fake.reject("m", "2", "worse on live labels")  # the registry clears its shadow alias
    await reconciler.reconcile_once()  # and gone from the registry: cleared
    assert d.slot.shadow("m") is None
