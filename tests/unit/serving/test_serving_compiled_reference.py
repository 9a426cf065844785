"""The compiled form is checked on the version's reference sample: the training values its
profile keeps (read from the store beside the artifact), then the synthetic rows around the
scaler's statistics and the NaN row. A graph wrong only on a real training value is refused;
a version without a readable profile is checked on the synthetic rows alone (and says so);
versions training builds normally still get their compiled form. Compiled forms exist only for
all-numeric models (categorical ones keep the DataFrame path), so the values are numeric.
Real pipelines (training's build_pipeline), real profiles (shared/profile.py), real loads."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import ArtifactStore, artifact_key
from structlog.testing import capture_logs

from driftloop.services.serving.core import compiled_form, numeric_form, reference_sample
from driftloop.services.serving.core.compiled_form import CompiledForm
from driftloop.services.serving.core.deployment import Deployer
from driftloop.services.serving.core.slot import ModelSlot
from driftloop.services.training.core.domain import ModelSpec
from driftloop.services.training.core.trainer import build_pipeline
from driftloop.shared import artifacts
from driftloop.shared.artifacts import ModelSignature, signature
from driftloop.shared.profile import build_profile

pytestmark = pytest.mark.unit

FEATURES = ["b", "a", "c"]  # deliberately not the profile's (alphabetical) column order


def training_frame(rows: int = 200) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Three numeric columns at different scales, a class target and a numeric target."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)) * [1, 5, 20] + [0, 10, -3], columns=FEATURES)
    labels = np.where(frame["b"] + (frame["a"] - 10) / 5 > 0, "yes", "no")
    numbers = 300 + 40 * frame["b"] - 3 * frame["a"] + frame["c"] + rng.normal(size=rows)
    return frame, labels, numbers.to_numpy()


FRAME, LABELS, NUMBERS = training_frame()


def fitted(estimator: str, task: str = "classification") -> Any:
    spec = ModelSpec(estimator=estimator, task=task)
    target = NUMBERS if task == "regression" else LABELS
    return build_pipeline(FRAME, FEATURES, spec).fit(FRAME[FEATURES], target)


def profile_json(frame: pd.DataFrame = FRAME) -> bytes:
    """The profile training stores for a version fitted on `frame` (columns as training
    profiles them; reordered here so feature order must come from the signature)."""
    return build_profile("m", "", frame[sorted(frame.columns)]).to_json()


def put(store: ArtifactStore, version: str, pipeline: Any, profile: bytes | None) -> str:
    """Store m/`version`'s artifact (and its profile beside it, unless None); its sha256."""
    key = artifact_key("m", version)
    blob = artifacts.dump_model(pipeline)
    store.objects[key] = blob
    if profile is not None:
        store.objects[reference_sample.profile_key(key)] = profile
    return artifacts.sha256(blob)


async def deployed(pipeline: Any, *, profile: bytes | None) -> tuple[Deployer, Any, ArtifactStore]:
    """Deploy `pipeline` as m/1 with compiled forms on: the deployer, what serves, the store."""
    store = ArtifactStore()
    sha = put(store, "1", pipeline, profile)

    async def load(data: bytes, sha256: str) -> Any:
        return await asyncio.to_thread(artifacts.load_model, data, sha256)

    deployer = Deployer(ModelSlot(), store.fetch, load, compiled=True)
    await deployer.deploy("m", "1", artifact_key("m", "1"), sha)
    return deployer, deployer.slot.get("m").numeric, store


class WrongOn:
    """An ONNX Runtime session answering like the real one except on rows whose first feature
    is `value` (in float32): there a classifier's probabilities are reversed and a
    regressor's prediction is off by 1%."""

    def __init__(self, real: Any, value: float) -> None:
        self._real = real
        self._value = np.float32(value)

    def get_inputs(self) -> Any:
        return self._real.get_inputs()

    def get_outputs(self) -> Any:
        return self._real.get_outputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (answer,) = self._real.run(names, feeds)
        (x,) = feeds.values()
        hit = x[:, 0] == self._value
        answer = answer.copy()
        if answer.ndim == 2 and answer.shape[1] == 2:
            answer[hit] = answer[hit][:, ::-1]
        else:
            answer[hit] *= 1.01
        return [answer]


def wrong_on(monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    """Every graph compiled from now on is wrong only where the first feature is `value`."""
    real = compiled_form._session

    def session(*args: Any, **kwargs: Any) -> tuple[Any, int]:
        got, size = real(*args, **kwargs)
        return WrongOn(got, value), size

    monkeypatch.setattr(compiled_form, "_session", session)


def a_real_value(pipeline: Any, task: str) -> float:
    """A training value of the first feature from the row the classifier is surest of (a
    reversed answer there is far past the tolerance), or any row for a regressor."""
    if task == "regression":
        return float(FRAME[FEATURES[0]].iloc[17])
    p = pipeline.predict_proba(FRAME[FEATURES])[:, 0]
    return float(FRAME[FEATURES[0]].iloc[int(np.argmax(np.abs(p - 0.5)))])


def test_the_profile_gives_rows_in_the_models_feature_order() -> None:
    sig = signature(fitted("logistic_regression"))
    rows = reference_sample.from_profile(profile_json(), sig)
    # no column had missing values: training sampled every column the same way, so each row
    # is a training row, columns in the signature's order (not the profile's)
    np.testing.assert_array_equal(rows, FRAME[FEATURES].to_numpy())


def test_columns_of_different_lengths_are_combined_row_wise_as_they_are() -> None:
    frame = FRAME.copy()
    frame.loc[:49, "a"] = np.nan  # 150 values left
    frame["c"] = np.nan  # none at all
    rows = reference_sample.from_profile(
        profile_json(frame), signature(fitted("ridge", "regression"))
    )
    assert rows.shape == (200, 3)
    np.testing.assert_array_equal(rows[:, 0], FRAME["b"].to_numpy())
    a = FRAME["a"].to_numpy()[50:]
    np.testing.assert_array_equal(rows[:150, 1], a)  # every value kept...
    np.testing.assert_array_equal(rows[150:, 1], a[:50])  # ...the shorter column repeating
    assert np.isnan(rows[:, 2]).all()


def test_the_reference_rows_are_cut_at_the_profiles_sample_size() -> None:
    big = pd.DataFrame(np.arange(3 * 5000.0).reshape(5000, 3), columns=FEATURES)
    data = build_profile("m", "", big, max_sample=5000).to_json()
    rows = reference_sample.from_profile(data, signature(fitted("logistic_regression")))
    assert rows.shape == (reference_sample.MAX_ROWS, 3)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00not json", "not a reference profile"),
        (build_profile("m", "", FRAME[["b", "a"]]).to_json(), "no column 'c'"),
        (
            build_profile("m", "", FRAME.assign(a=FRAME["a"].astype(str))).to_json(),
            "'a' is categorical",
        ),
        (build_profile("m", "", FRAME.iloc[:0]).to_json(), "no sampled values"),
    ],
)
def test_a_profile_that_cannot_give_rows_says_why(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        reference_sample.from_profile(data, signature(fitted("logistic_regression")))


def test_the_profile_is_read_from_beside_the_artifact() -> None:
    assert (
        reference_sample.profile_key("artifacts/m/run-1/model.skops")
        == "artifacts/m/run-1/profile.json"
    )


@pytest.mark.parametrize(
    ("estimator", "task"), [("logistic_regression", "classification"), ("ridge", "regression")]
)
async def test_a_graph_wrong_only_on_a_real_training_value_is_refused(
    monkeypatch: pytest.MonkeyPatch, estimator: str, task: str
) -> None:
    pipeline = fitted(estimator, task)
    wrong_on(monkeypatch, a_real_value(pipeline, task))
    # the synthetic rows alone do not catch it: they never hold that value...
    sig = signature(pipeline)
    positional = numeric_form.positional_pipeline(pipeline)
    form = numeric_form.derive(pipeline, sig)
    assert compiled_form.build(positional, form, sig)[1] == "agrees"
    # ...the reference sample does: scikit-learn serves the version, and that is remembered
    with capture_logs() as logs:
        deployer, serves, _ = await deployed(pipeline, profile=profile_json())
    assert isinstance(serves, numeric_form.StepChain)
    checked = deployer.forms.get(deployer.slot.get("m").sha256)
    assert checked is not None and checked.compiled == "disagrees"
    (disagreed,) = [e for e in logs if e["event"] == "compiled_form_disagrees"]
    assert disagreed["reference_rows"] == len(FRAME)
    assert not [e for e in logs if e["event"] == "reference_sample_unavailable"]


@pytest.mark.parametrize("profile", [None, b"{}", b"\xff" * 10])
async def test_without_a_readable_profile_the_synthetic_rows_decide_and_the_log_says_why(
    monkeypatch: pytest.MonkeyPatch, profile: bytes | None
) -> None:
    pipeline = fitted("logistic_regression")
    wrong_on(monkeypatch, a_real_value(pipeline, "classification"))
    with capture_logs() as logs:
        deployer, serves, store = await deployed(pipeline, profile=profile)
    # the deploy succeeds; the version is checked as before: on the synthetic rows, which
    # this graph passes (it is wrong only on a value they do not hold)
    assert isinstance(serves, CompiledForm)
    (why,) = [e for e in logs if e["event"] == "reference_sample_unavailable"]
    assert why["profile_key"] == "artifacts/m/r1/profile.json" and why["model"] == "m"
    assert why["reason"].startswith("NotFound" if profile is None else "ValueError")
    assert why["checked_on"] == "synthetic rows"
    assert store.fetched == ["artifacts/m/r1/model.skops", "artifacts/m/r1/profile.json"]


@pytest.mark.parametrize(
    ("estimator", "task"),
    [
        ("logistic_regression", "classification"),
        ("random_forest", "classification"),
        ("ridge", "regression"),
        ("random_forest", "regression"),
    ],
)
async def test_versions_training_builds_keep_their_compiled_form(
    monkeypatch: pytest.MonkeyPatch, estimator: str, task: str
) -> None:
    seen: list[int] = []
    real = compiled_form.check_sample

    def spy(
        positional: Any, sig: ModelSignature, reference: np.ndarray | None, rows: int
    ) -> np.ndarray:
        seen.append(0 if reference is None else len(reference))
        return real(positional, sig, reference, rows)

    monkeypatch.setattr(compiled_form, "check_sample", spy)
    pipeline = fitted(estimator, task)
    with capture_logs() as logs:
        _, serves, _ = await deployed(pipeline, profile=profile_json())
    assert isinstance(serves, CompiledForm)
    assert seen == [len(FRAME)]  # checked once, on the reference rows too
    assert not [e for e in logs if e["event"].startswith(("compiled_form", "reference"))]
    rows = reference_sample.from_profile(profile_json(), signature(pipeline))
    frame = pd.DataFrame(rows, columns=FEATURES)
    if task == "regression":
        expected = pipeline.predict(frame)
        assert numeric_form.relative_difference(expected, serves.predict(rows)) <= (
            compiled_form.REGRESSION_TOLERANCE
        )
    else:
        expected = pipeline.predict_proba(frame)
        np.testing.assert_allclose(
            serves.predict_proba(rows), expected, rtol=0, atol=compiled_form.TOLERANCE
        )


async def test_histogram_gradient_boosting_stays_on_scikit_learn_without_reading_a_profile() -> (
    None
):
    """skl2onnx 1.20 cannot convert it (form_memo.py): unchanged, it is served by its numeric
    form; once its shape is given up on, a new version reads no profile for a check that will
    not run."""
    pipeline = fitted("gradient_boosting")
    deployer, serves, store = await deployed(pipeline, profile=profile_json())
    assert isinstance(serves, numeric_form.StepChain)
    checked = deployer.forms.get(deployer.slot.get("m").sha256)
    assert checked is not None and checked.compiled == "unconvertible"
    assert "artifacts/m/r1/profile.json" in store.fetched  # the first try did check
    for sha in ("b" * 64, "c" * 64):  # two more artifacts of the shape failed
        deployer.forms.compiled(numeric_form.form_memo.shape(pipeline), sha, "unconvertible")
    other = fitted("gradient_boosting")
    other.named_steps["model"].max_iter = 7  # other bytes, same shape
    sha = put(store, "2", other, profile_json())
    store.fetched.clear()
    await deployer.deploy("m", "2", artifact_key("m", "2"), sha)
    assert isinstance(deployer.slot.get("m").numeric, numeric_form.StepChain)
    assert store.fetched == ["artifacts/m/r2/model.skops"]


async def test_a_version_already_checked_reads_no_profile_again() -> None:
    pipeline = fitted("logistic_regression")
    deployer, _, store = await deployed(pipeline, profile=profile_json())
    blob = store.objects["artifacts/m/r1/model.skops"]
    store.objects["artifacts/n/r1/model.skops"] = blob  # the same bytes as another model
    await deployer.deploy("n", "1", "artifacts/n/r1/model.skops", artifacts.sha256(blob))
    assert isinstance(deployer.slot.get("n").numeric, CompiledForm)
    assert "artifacts/n/r1/profile.json" not in store.fetched
