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
