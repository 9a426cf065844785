"""Tiny real scikit-learn pipelines for the serving tests, built the way training builds them.

Pipeline([("prep", ColumnTransformer([("num", ...), ("cat", ...)])), ("model", estimator)])
fitted on a DataFrame, string classes; plus a broken variant that loads but cannot predict, and
regressors built by training's build_pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.pipeline import make_pipeline as chain
from sklearn.preprocessing import OneHotEncoder, StandardScaler

FEATURES = ["x1", "color", "x2"]
NUMERIC = ["x1", "x2"]
CATEGORICAL = ["color"]


def training_frame(rows: int = 80, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=rows),
            "color": rng.choice(["red", "blue", "green"], size=rows),
            "x2": rng.normal(size=rows),
        }
    )
    target = np.where(frame["x1"] + (frame["color"] == "red") > 0.5, "yes", "no").astype(str)
    return frame, target


def make_pipeline(seed: int = 0) -> Any:
    """A fitted pipeline on features x1 (numeric), color (categorical), x2 (numeric).

    why KNNImputer: shared.artifacts refuses SimpleImputer's pickled numpy.dtype (see report).
    """
    frame, target = training_frame(seed=seed)
    prep = ColumnTransformer(
        [
            ("num", chain(KNNImputer(n_neighbors=1), StandardScaler()), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(frame, target)


def regression_frame(rows: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """training_frame's features with a float target (in the hundreds, so a relative error
    shows where an absolute one would not)."""
    frame, _ = training_frame(rows=rows, seed=seed)
    noise = np.random.default_rng(seed + 100).normal(size=rows)
    target = 300.0 + 40.0 * frame["x1"] + 25.0 * (frame["color"] == "red") - 15 * frame["x2"]
    return frame, (target + noise).to_numpy(dtype=np.float64)


def make_regressor(
    seed: int = 0, estimator: str = "gradient_boosting", features: list[str] | None = None
) -> Any:
    """A regressor fitted on floats, built by training's own build_pipeline (the shape every
    regression artifact has); `features` defaults to x1, color, x2 (NUMERIC: all-numeric)."""
    from driftloop.services.training.core.domain import ModelSpec
    from driftloop.services.training.core.trainer import build_pipeline

    frame, target = regression_frame(seed=seed)
    columns = list(features or FEATURES)
    spec = ModelSpec(estimator=estimator, task="regression")
    return build_pipeline(frame, columns, spec).fit(frame[columns], target)


def make_broken_pipeline() -> Any:
    """Loads fine, fails every prediction: its coefficients no longer match its inputs."""
    pipeline = make_pipeline()
    model = pipeline.named_steps["model"]
    model.coef_ = np.zeros((1, model.coef_.shape[1] + 3))
    return pipeline


@contextlib.contextmanager
def serving_in_thread(service: Any) -> Iterator[str]:
    """Serve `service` (an InferenceService) over real gRPC on a free port, from an event loop
    in a background thread, so synchronous clients can call it; yields "127.0.0.1:PORT"."""
    from driftloop.services.serving.adapters.grpc import InferenceServicer, binding
    from driftloop.shared.grpc.server import build_server
    from driftloop.shared.settings import CommonSettings

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        server, _, port = build_server(
            CommonSettings(), 0, [binding(InferenceServicer(service, lambda: True))]
        )
        await server.start()
        state["stop"], state["port"] = asyncio.Event(), port
        started.set()
        await state["stop"].wait()
        await server.stop(grace=1)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    try:
        yield f"127.0.0.1:{state['port']}"
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        loop.close()


# ---- fleets ------------------------------------------------------------------------------------

FLEET = "arrivals"
FLEET_FEATURES = ("x1", "x2")


def fleet_regressor(offset: float, features: tuple[str, ...] = FLEET_FEATURES) -> Any:
    """A ridge regressor predicting about `offset` + 2 x1 - x2 (so the number shows which model
    answered), built by training's build_pipeline; `features` may add "route_id"."""
    from driftloop.services.training.core.domain import ModelSpec
    from driftloop.services.training.core.trainer import build_pipeline

    rng = np.random.default_rng(int(offset))
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=60),
            "x2": rng.normal(size=60),
            "route_id": rng.integers(1, 5, size=60).astype(float),
        }
    )
    target = offset + 2.0 * frame["x1"] - frame["x2"]
    spec = ModelSpec(estimator="ridge", task="regression")
    return build_pipeline(frame, list(features), spec).fit(frame[list(features)], target)


class ArtifactStore:
    """Artifacts in memory, by object key; counts fetches and can hold them at a gate."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.fetched: list[str] = []
        self.gate: asyncio.Event | None = None

    async def fetch(self, key: str) -> bytes:
        from driftloop.shared.errors import NotFound

        self.fetched.append(key)
        if self.gate is not None:
            await self.gate.wait()
        if key not in self.objects:
            raise NotFound(f"object {key!r} not found")
        return self.objects[key]


def artifact_key(model: str, version: str) -> str:
    return f"artifacts/{model}/r{version}/model.skops"


class FleetModels:
    """A fleet's models as the registry and the object store hold them: the fake registry
    (tests/registry_fake.py) with fleet FLEET partitioned by `columns`, and the artifacts."""

    def __init__(self, columns: tuple[str, ...] = ("route_id",)) -> None:
        from registry_fake import FakeRegistry

        from driftloop.shared.registry_types import Model, TrainingSpec

        self.spec = TrainingSpec(task="regression", partition_by=columns)
        self.registry = FakeRegistry()
        self.registry.put_model(Model(FLEET, "trips", "delay", self.spec))
        self.store = ArtifactStore()

    def add(self, model: str, version: str, pipeline: Any, *, production: bool = True) -> str:
        """Store `pipeline` as `model` version `version` (a partition model is created as the
        registry does); production unless told otherwise. Returns its sha256."""
        from driftloop.shared import artifacts
        from driftloop.shared.registry_types import Model, ModelVersion

        blob = artifacts.dump_model(pipeline)
        key, sha = artifact_key(model, version), artifacts.sha256(blob)
        self.store.objects[key] = blob
        if "/" in model and model not in self.registry.state.models:
            self.registry.put_model(Model(model, "trips", "delay", self.spec, fleet=FLEET))
        alias = "production" if production else ""
        self.registry.put_version(ModelVersion(model, version, "", key, sha), alias)
        return sha


class RecordingPublisher:
    """Stands in for EventPublisher in a unit test: builds real envelopes, keeps them."""

    def __init__(self) -> None:
        from driftloop.shared.bus import envelope

        self.sent: list[tuple[str, str, envelope.Envelope]] = []

    def event(self, payload: Any, **kw: Any) -> Any:
        from driftloop.shared.bus import envelope

        return envelope.new_event("serving", payload, **kw)

    async def publish(self, topic: str, key: str, event: Any) -> None:
        self.sent.append((topic, key, event))


class LogSink:
    """Where a PredictionLogger publishes in a unit test: (model, version, fleet, columns)."""

    def __init__(self) -> None:
        self.logs: list[tuple[str, str, str, dict[str, list[Any]]]] = []

    async def publish(
        self, model: str, version: str, ipc: bytes, rows: int, fleet: str = ""
    ) -> None:
        from driftloop.shared.records import ipc_to_table

        self.logs.append((model, version, fleet, ipc_to_table(ipc).to_pydict()))


class FleetServing:
    """Serving's core parts as main.py wires them (deployer, model cache, fleet router,
    inference, model events, reconcile) over a FleetModels' fake registry and store."""

    def __init__(
        self,
        models: FleetModels,
        *,
        budget_bytes: int = 0,
        batching: bool = False,
        compiled: bool = False,
    ) -> None:
        from driftloop.services.serving.adapters.kafka import ModelEvents
        from driftloop.services.serving.adapters.registry import RegistryVersions
        from driftloop.services.serving.core.batching import BatchPolicy
        from driftloop.services.serving.core.deployment import Deployer
        from driftloop.services.serving.core.fleet_router import FleetRouter
        from driftloop.services.serving.core.inference import InferenceService
        from driftloop.services.serving.core.model_cache import ModelCache
        from driftloop.services.serving.core.prediction_log import PredictionLogger
        from driftloop.services.serving.core.reconcile import Reconciler
        from driftloop.services.serving.core.slot import ModelSlot
        from driftloop.shared import artifacts

        async def load(data: bytes, sha: str) -> Any:
            return await asyncio.to_thread(artifacts.load_model, data, sha)

        self.models = models
        self.slot = ModelSlot()
        self.deployer = Deployer(self.slot, models.store.fetch, load, compiled=compiled)
        registry = RegistryVersions(models.registry)  # type: ignore[arg-type]
        self.cache = ModelCache(self.deployer, registry, budget_bytes=budget_bytes)
        self.published = RecordingPublisher()
        self.events = ModelEvents(
            self.deployer,
            self.published,
            "h:1",
            partitions=self.cache,  # type: ignore[arg-type]
        )
        self.reconciler = Reconciler(
            self.deployer,
            self.events,
            registry,
            interval_s=5,
            shadows=registry,
            partitions=self.cache,
            fleets=registry,
        )
        self.sink = LogSink()
        self.logger = PredictionLogger(self.sink.publish, new_id=lambda: "gen")
        self.service = InferenceService(
            self.slot,
            self.logger,
            batching=BatchPolicy(max_batch_size=64) if batching else None,
            router=FleetRouter(self.slot, self.cache),
        )

    async def start(self) -> FleetServing:
        """The first reconcile pass, as on_start runs it."""
        await self.reconciler.reconcile_once()
        return self
