"""A regressor's numeric and compiled forms (derived at deploy time, checked against
scikit-learn's predict: 1e-9 and 1e-4 relative, or not used), every request style and numeric
datatype through them, a warm-up that refuses several numbers per row, the prediction log's
float64 `_prediction`, and shadow scoring with a regressor shadow."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import NUMERIC, make_pipeline, make_regressor, regression_frame
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from driftloop.services.serving.core import codec, compiled_form, numeric_form
from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.features import Matrix
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.core.shadow import ShadowScorer
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.artifacts import signature
from driftloop.shared.errors import ArtifactRejected
from driftloop.shared.records import ipc_to_table

pytestmark = pytest.mark.unit

RIDGE = make_regressor(estimator="ridge", features=NUMERIC)
BOOSTED = make_regressor(features=NUMERIC)  # training's default regressor
MIXED = make_regressor()


def frame(rows: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=NUMERIC)


@pytest.mark.parametrize("pipeline", [RIDGE, BOOSTED], ids=["ridge", "gradient_boosting"])
def test_a_numeric_regressor_gets_a_form_that_predicts_like_it(pipeline: Any) -> None:
    sig = signature(pipeline)
    form = numeric_form.derive(pipeline, sig)
    assert isinstance(form, numeric_form.StepChain)
    rows = numeric_form.check_sample(sig) * 3
    np.testing.assert_array_equal(form.predict(rows), pipeline.predict(frame(rows)))
    assert numeric_form.agrees(pipeline, form, sig) == (True, 0.0)
    assert numeric_form.derive(MIXED, signature(MIXED)) is None  # categorical: DataFrame path


def test_a_form_that_predicts_otherwise_is_refused() -> None:
    sig = signature(RIDGE)
    good = numeric_form.derive(RIDGE, sig)
    assert good is not None

    class Swapped:
        """The form with the two columns exchanged: what a wrong feature order would do."""

        def predict(self, x: np.ndarray) -> Any:
            return good.predict(x[:, [1, 0]])

    class Nudged:
        """Off by a part in a million: more than float64 arithmetic ever is."""

        def predict(self, x: np.ndarray) -> Any:
            return good.predict(x) * (1 + 1e-6)

    for wrong in (Swapped(), Nudged()):
        ok, difference = numeric_form.agrees(RIDGE, wrong, sig)
        assert not ok and difference > numeric_form.REGRESSION_TOLERANCE


def test_the_relative_difference_is_relative_to_the_predictions_own_size() -> None:
    diff = numeric_form.relative_difference
    assert diff([1e6, 2e6], [1e6, 2e6]) == 0.0
    # 1 in a million counted against |1e6| + the mean 1.5e6
    assert diff([1e6, 2e6], [1e6 + 1, 2e6]) == pytest.approx(1 / 2.5e6)
    # near zero, a prediction is held to its neighbours' digits, not to more
    assert diff([0.0, 100.0], [1e-3, 100.0]) == pytest.approx(1e-3 / 50)
    assert diff([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert diff([0.0, 0.0], [0.0, 1e-12]) == float("inf")
    assert diff([np.nan, 1.0], [np.nan, 1.0]) == 0.0
    assert diff([np.nan, 1.0], [0.0, 1.0]) == float("inf")
    assert diff([np.inf, 1.0], [np.inf, 1.0]) == 0.0
    assert diff([1.0, 2.0], [1.0]) == float("inf")
    assert diff([], []) == 0.0


def test_the_compiled_form_predicts_like_scikit_learn_within_its_tolerance() -> None:
    sig = signature(RIDGE)
    form = numeric_form.derive(RIDGE, sig, compiled=True)
    assert isinstance(form, compiled_form.CompiledForm)
    rows = compiled_form.realistic_sample(numeric_form.positional_pipeline(RIDGE), sig, 4096)
    got = form.predict(rows)
    assert got.dtype == np.float64 and got.shape == (4096,)
    want = RIDGE.predict(frame(rows))
    assert numeric_form.relative_difference(want, got) <= compiled_form.REGRESSION_TOLERANCE
    assert numeric_form.relative_difference(want, got) > 0  # float32: not bit-identical
    # a value no float32 holds is predicted by scikit-learn, exactly
    huge = rows[:3].copy()
    huge[2, 0] = 1e39
    np.testing.assert_array_equal(form.predict(huge), RIDGE.predict(frame(huge)))


def test_whatever_form_a_tree_regressor_gets_predicts_within_its_tolerance() -> None:
    """Trees compile or not (skl2onnx version, float32 splits); what is used agrees."""
    for pipeline in (BOOSTED, make_regressor(estimator="random_forest", features=NUMERIC)):
        sig = signature(pipeline)
        form = numeric_form.derive(pipeline, sig, compiled=True)
        assert isinstance(form, compiled_form.CompiledForm | numeric_form.StepChain)
        tolerance = (
            compiled_form.REGRESSION_TOLERANCE
            if isinstance(form, compiled_form.CompiledForm)
            else numeric_form.REGRESSION_TOLERANCE
        )
        positional = numeric_form.positional_pipeline(pipeline)
        rows = compiled_form.realistic_sample(positional, sig, compiled_form.REGRESSION_CHECK_ROWS)
        difference = numeric_form.relative_difference(
            pipeline.predict(frame(rows)), form.predict(rows)
        )
        assert difference <= tolerance


def test_no_compiled_form_where_float32_would_change_predictions() -> None:
    """Timestamps (1.7e9, spread 5) lose their information in a float32: scikit-learn serves."""
    rng = np.random.default_rng(5)
    x = 1.7e9 + rng.normal(size=(300, 2)) * 5
    target = 50.0 * (x[:, 0] - 1.7e9) + rng.normal(size=300)
    prep = ColumnTransformer(
        [("num", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), ["t0", "t1"])]
    )
    pipeline = Pipeline([("prep", prep), ("model", Ridge())])
    pipeline.fit(pd.DataFrame(x, columns=["t0", "t1"]), target)
    form = numeric_form.derive(pipeline, signature(pipeline), compiled=True)
    assert isinstance(form, numeric_form.StepChain)


def store(*pipelines: Any) -> tuple[Any, dict[str, str]]:
    blobs = {f"k{i}": artifacts.dump_model(p) for i, p in enumerate(pipelines)}

    async def fetch(key: str) -> bytes:
        return blobs[key]

    return fetch, {key: artifacts.sha256(blob) for key, blob in blobs.items()}


async def load(data: bytes, sha: str) -> Any:
    return await asyncio.to_thread(artifacts.load_model, data, sha)


VALUES = np.array([[1.5, -2.0], [0.0, 4.0], [-3.0, 0.5]])
FIELDS = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents"}


def requests(datatype: str) -> list[codec.InferenceRequest]:
    """The rows as one [N, 2] tensor and as one [N] tensor per feature (INT64: whole numbers)."""
    values = VALUES.round() if datatype == "INT64" else VALUES
    cast = values.astype(np.int64 if datatype == "INT64" else np.float64)
    field = FIELDS[datatype]
    tensor = codec.InputTensor("in", datatype, (3, 2), {field: cast.ravel().tolist()})
    columns = tuple(
        codec.InputTensor(name, datatype, (3,), {field: cast[:, j].tolist()})
        for j, name in enumerate(NUMERIC)
    )
    return [
        codec.InferenceRequest("m", "", "r", (tensor,)),
        codec.InferenceRequest("m", "", "r", columns),
    ]


@pytest.mark.parametrize("compiled", [False, True])
async def test_deploy_derives_the_form_and_every_request_style_uses_it(compiled: bool) -> None:
    fetch, shas = store(RIDGE)
    slot = ModelSlot()
    await Deployer(slot, fetch, load, compiled=compiled).deploy("m", "1", "k0", shas["k0"])
    kind = compiled_form.CompiledForm if compiled else numeric_form.StepChain
    assert isinstance(slot.get("m").numeric, kind)
    tolerance = (
        compiled_form.REGRESSION_TOLERANCE if compiled else numeric_form.REGRESSION_TOLERANCE
    )
    service = InferenceService(slot, batching=BatchPolicy(max_batch_size=64))
    for datatype in FIELDS:
        sent = VALUES.round() if datatype == "INT64" else VALUES.astype(np.float32)
        want = RIDGE.predict(frame(sent.astype(np.float64)))
        for request in requests(datatype):
            answer = await service.infer_async(request)
            [out] = answer.outputs
            assert (out.name, out.datatype, out.shape) == ("prediction", "FP64", (3,))
            assert numeric_form.relative_difference(want, out.data) <= tolerance, datatype


async def test_a_model_predicting_several_numbers_per_row_is_refused_at_deploy() -> None:
    features, target = regression_frame()
    two = np.column_stack([target, -target])
    prep = ColumnTransformer(
        [("num", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), NUMERIC)]
    )
    pipeline = Pipeline([("prep", prep), ("model", Ridge())]).fit(features[NUMERIC], two)
    fetch, shas = store(pipeline)
    deployer = Deployer(ModelSlot(), fetch, load)
    with pytest.raises(ArtifactRejected, match="predicts 2 numbers per row"):
        await deployer.deploy("m", "1", "k0", shas["k0"])
    assert not deployer.slot.has("m")


class Sink:
    def __init__(self) -> None:
        self.logs: list[tuple[str, str, Any]] = []

    async def __call__(self, model: str, version: str, ipc: bytes, rows: int) -> None:
        self.logs.append((model, version, ipc_to_table(ipc)))


async def test_the_prediction_log_holds_a_regressors_numbers_as_float64() -> None:
    sink = Sink()
    logger = PredictionLogger(sink, new_id=lambda: "g")
    numbers = np.array([12.5, -3.25])
    logger.offer(PredictionRecord("p", "2", Matrix(VALUES[:2], tuple(NUMERIC)), "r1", numbers, 9.0))
    logger.offer(PredictionRecord("p", "2", frame(VALUES[2:]), "r2", np.array([7.0]), 9.5))
    classes = np.array(["yes"], dtype=object)
    logger.offer(PredictionRecord("c", "1", frame(VALUES[:1]), "r3", classes, 9.0))
    # a version whose artifact was replaced by one of the other task: logged as text
    logger.offer(PredictionRecord("x", "1", frame(VALUES[:1]), "r4", np.array([1.5]), 9.0))
    logger.offer(PredictionRecord("x", "1", frame(VALUES[:1]), "r5", classes, 9.0))
    await logger.flush()
    tables = {model: table for model, _, table in sink.logs}
    regression = tables["p"]
    assert regression.schema.field("_prediction").type == "double"
    assert regression.column("_prediction").to_pylist() == [12.5, -3.25, 7.0]
    assert regression.column("_request_id").to_pylist() == ["r1:0", "r1:1", "r2"]
    assert tables["c"].column("_prediction").to_pylist() == ["yes"]
    assert tables["c"].schema.field("_prediction").type == "string"
    assert tables["x"].column("_prediction").to_pylist() == ["1.5", "yes"]


@pytest.mark.parametrize("production", ["classifier", "regressor"])
async def test_a_regressor_shadow_is_scored_and_logged_as_numbers(production: str) -> None:
    prod = make_pipeline() if production == "classifier" else make_regressor(seed=1)
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", prod, signature(prod), "sha1"))
    slot.set_shadow(LoadedModel("m", "2", MIXED, signature(MIXED), "sha2"))
    live, shadow_sink = Sink(), Sink()
    scorer = ShadowScorer(slot, PredictionLogger(shadow_sink))
    service = InferenceService(slot, PredictionLogger(live), shadow=scorer)
    rows = [(0.5, "red", 1.0), (-1.0, "blue", 0.0)]
    request = codec.InferenceRequest(
        "m",
        "",
        "s-1",
        (
            codec.InputTensor("x1", "FP64", (2,), {"fp64_contents": [r[0] for r in rows]}),
            codec.InputTensor(
                "color", "BYTES", (2,), {"bytes_contents": [r[1].encode() for r in rows]}
            ),
            codec.InputTensor("x2", "FP64", (2,), {"fp64_contents": [r[2] for r in rows]}),
        ),
    )
    answer = service.infer(request)
    assert answer.version == "1"
    assert answer.outputs[0].name == ("label" if production == "classifier" else "prediction")
    await scorer.drain()
    await scorer._logger.flush()
    [(_, version, table)] = shadow_sink.logs
    assert version == "2" and table.schema.field("_prediction").type == "double"
    want = MIXED.predict(pd.DataFrame(rows, columns=["x1", "color", "x2"]))
    assert table.column("_prediction").to_pylist() == want.tolist()
    assert table.column("_request_id").to_pylist() == ["s-1:0", "s-1:1"]
