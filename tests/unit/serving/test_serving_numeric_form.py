"""The numeric form of all-numeric pipelines: derived at deploy time, checked against the
pipeline, used for both request styles and both float widths with the pipeline's own answers;
models it cannot serve (categorical features, a form that disagrees) keep the DataFrame path."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import make_pipeline
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from driftloop.services.serving.core import codec, compiled_form, numeric_form, outputs
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.features import Matrix
from driftloop.services.serving.core.inference import InferenceService, predict
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.artifacts import signature

pytestmark = pytest.mark.unit

NAMES = ["b", "a", "c"]


def numeric_pipeline(groups: list[list[str]] | None = None) -> Any:
    """Three numeric features (deliberately not in alphabetical order), the training shape."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(200, 3)) * [1, 5, 20], columns=NAMES)
    frame.iloc[3, 1] = np.nan
    target = np.where(frame["b"] + frame["a"] / 5 > 0, "yes", "no")
    groups = groups or [NAMES]
    prep = ColumnTransformer(
        [
            (f"num{i}", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), cols)
            for i, cols in enumerate(groups)
        ]
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(frame, target)


def test_a_numeric_pipeline_gets_a_form_that_answers_like_it() -> None:
    pipeline = numeric_pipeline()
    sig = signature(pipeline)
    form = numeric_form.derive(pipeline, sig)
    assert isinstance(form, numeric_form.StepChain)
    rows = numeric_form.check_sample(sig) * 3
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=NAMES))
    np.testing.assert_array_equal(form.predict_proba(rows), expected)
    # the original is untouched: it still takes (and checks) named columns
    assert list(pipeline.feature_names_in_) == NAMES


def test_columns_split_over_transformers_get_a_positional_pipeline() -> None:
    pipeline = numeric_pipeline([["c"], ["b", "a"]])
    sig = signature(pipeline)
    form = numeric_form.derive(pipeline, sig)
    assert isinstance(form, Pipeline)
    rows = numeric_form.check_sample(sig)
    np.testing.assert_array_equal(
        form.predict_proba(rows), pipeline.predict_proba(pd.DataFrame(rows, columns=NAMES))
    )


def test_categorical_models_and_disagreeing_forms_get_none() -> None:
    mixed = make_pipeline()
    assert numeric_form.derive(mixed, signature(mixed)) is None
    pipeline = numeric_pipeline()
    sig = signature(pipeline)
    good = numeric_form.derive(pipeline, sig)
    assert numeric_form.agrees(pipeline, good, sig) == (True, 0.0)

    class Swapped:
        """The form with two columns exchanged: what a wrong feature order would do."""

        def predict_proba(self, x: np.ndarray) -> Any:
            return good.predict_proba(x[:, [1, 0, 2]])

    ok, difference = numeric_form.agrees(pipeline, Swapped(), sig)
    assert not ok and difference > numeric_form.TOLERANCE


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_both_request_styles_and_widths_decode_to_one_matrix(datatype: str) -> None:
    sig = signature(numeric_pipeline())
    field = codec.DATATYPES[datatype].field
    values = np.array([[1.5, -2.25, 3.0], [0.5, 8.0, -1.0]])
    tensor = codec.InferenceRequest(
        "m", "", "", (codec.InputTensor("in", datatype, (2, 3), {field: values.ravel()}),)
    )
    per_feature = codec.InferenceRequest(
        "m",
        "",
        "",
        tuple(
            codec.InputTensor(n, datatype, (2,), {field: values[:, j]}) for j, n in enumerate(NAMES)
        ),
    )
    for request in (tensor, per_feature):
        rows = codec.decode_rows(request, sig)
        assert rows.columns is None and rows.matrix is not None
        assert rows.matrix.dtype == np.float64
        np.testing.assert_array_equal(rows.matrix, values)


@pytest.mark.parametrize("compiled", [False, True])
async def test_deploy_derives_the_form_and_requests_use_it(compiled: bool) -> None:
    pipeline = numeric_pipeline()
    data = artifacts.dump_model(pipeline)

    async def fetch(key: str) -> bytes:
        return data

    async def load(blob: bytes, sha: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, blob, sha)

    slot = ModelSlot()
    await Deployer(slot, fetch, load, compiled=compiled).deploy(
        "m", "1", "k", artifacts.sha256(data)
    )
    loaded = slot.get("m")
    kind = compiled_form.CompiledForm if compiled else numeric_form.StepChain
    assert isinstance(loaded.numeric, kind)
    service = InferenceService(slot)
    request = codec.InferenceRequest(
        "m", "", "r", (codec.InputTensor("in", "FP32", (1, 3), {"fp32_contents": [1, 2, 3]}),)
    )
    answer = service.infer(request)
    expected = pipeline.predict_proba(pd.DataFrame([[1.0, 2.0, 3.0]], columns=NAMES))
    probabilities = next(o for o in answer.outputs if o.name == outputs.PROBABILITIES)
    atol = compiled_form.TOLERANCE if compiled else 1e-12
    np.testing.assert_allclose(probabilities.data, expected.ravel(), rtol=0, atol=atol)


def test_a_matrix_for_a_model_without_a_form_goes_through_a_dataframe() -> None:
    pipeline = numeric_pipeline()
    plain = LoadedModel("m", "1", pipeline, signature(pipeline), "sha")
    rows = np.array([[0.5, 1.0, -2.0]])
    labels, proba = predict(plain, Matrix(rows, tuple(NAMES)))
    np.testing.assert_array_equal(proba, pipeline.predict_proba(pd.DataFrame(rows, columns=NAMES)))
    assert labels.tolist() == [str(pipeline.predict(pd.DataFrame(rows, columns=NAMES))[0])]


def test_the_compiled_form_answers_like_scikit_learn_within_its_tolerance() -> None:
    pipeline = numeric_pipeline()
    sig = signature(pipeline)
    form = numeric_form.derive(pipeline, sig, compiled=True)
    assert isinstance(form, compiled_form.CompiledForm)
    rows = compiled_form.realistic_sample(numeric_form.positional_pipeline(pipeline), sig)
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=NAMES))
    got = form.predict_proba(rows)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=compiled_form.TOLERANCE)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    # a value no float32 holds is scored by scikit-learn, exactly
    huge = rows[:3].copy()
    huge[2, 0] = 1e39
    np.testing.assert_array_equal(
        form.predict_proba(huge), pipeline.predict_proba(pd.DataFrame(huge, columns=NAMES))
    )


def test_no_compiled_form_where_float32_would_change_answers() -> None:
    """Features like timestamps (1.7e9, spread 5) lose their information in a float32: the
    compiled form disagrees on rows around the training data, so scikit-learn serves."""
    rng = np.random.default_rng(5)
    x = 1.7e9 + rng.normal(size=(300, 2)) * 5
    frame = pd.DataFrame(x, columns=["t0", "t1"])
    target = np.where(x[:, 0] - 1.7e9 > 0, "late", "early")
    prep = ColumnTransformer(
        [("num", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), ["t0", "t1"])]
    )
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression(C=100.0))])
    pipeline.fit(frame, target)
    form = numeric_form.derive(pipeline, signature(pipeline), compiled=True)
    assert isinstance(form, numeric_form.StepChain)
