"""The numeric form of an all-numeric pipeline: the same fitted steps selecting columns by
position instead of by name, so a request is scored from a float64 matrix with no DataFrame.

Derived at deploy time from the loaded, hash-checked skops pipeline (which stays the source of
truth) and used only when it gives the same answers as that pipeline on a check sample; the
feature order is thereby checked once per model version, never per request. A classifier's form
answers predict_proba, a regressor's predict.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import structlog

from driftloop.services.serving.core import form_memo
from driftloop.services.serving.core.form_memo import Checked, FormMemo
from driftloop.shared.artifacts import ModelSignature

log = structlog.get_logger(__name__)

CHECK_ROWS = 64
TOLERANCE = 1e-9
"""Largest absolute difference allowed between the two forms' class probabilities on the check
sample (the predicted labels must be identical). Both run the same float64 arithmetic, so in
practice they agree exactly; the tolerance only absorbs summation-order noise."""
REGRESSION_TOLERANCE = 1e-9
"""For a regressor: largest difference allowed between the two forms' predictions on the check
sample, relative to the prediction's size (see relative_difference)."""


def derive(
    pipeline: Any,
    signature: ModelSignature,
    *,
    compiled: bool = False,
    memo: FormMemo | None = None,
    sha256: str = "",
    reference: np.ndarray | None = None,
) -> Any | None:
    """The numeric form of `pipeline`, or None when it has categorical features, is not the
    shape training builds, or does not agree with the pipeline on the check sample. With
    `compiled`, the ONNX Runtime form (compiled_form.py) when it agrees too.

    With `memo` and the artifact's `sha256` (bytes the loader hash-checked), checks already
    made for that artifact are not made again, a compilation that failed for it (or for its
    pipeline shape, form_memo.py) is not tried again, and what was found is recorded.

    `reference`: the version's reference rows (reference_sample.py), which the compiled form
    is checked on besides its synthetic rows (None: synthetic rows only). The numeric form's
    own check keeps check_sample: it runs the pipeline's float64 arithmetic, so only a column
    mix-up could make it differ, and check_sample's distinct column scales show one."""
    if not signature.features or any(f.kind != "numeric" for f in signature.features):
        return None
    known = memo.get(sha256) if memo is not None and sha256 else None
    if known is not None and not known.numeric:
        return None  # this artifact's form disagreed (or could not be built) before
    try:
        positional = positional_pipeline(pipeline)
        prep, final = positional.steps[0][1], positional.steps[1][1]
        form = _chain(prep, final) or positional
        same, difference = (True, 0.0) if known is not None else agrees(pipeline, form, signature)
    except Exception as exc:  # noqa: BLE001 - optional: the pipeline itself still serves
        log.info("numeric_form_unavailable", reason=f"{type(exc).__name__}: {exc}")
        _remember(memo, sha256, Checked(numeric=False))
        return None
    if not same:
        tolerance = REGRESSION_TOLERANCE if signature.task == "regression" else TOLERANCE
        log.warning("numeric_form_disagrees", max_difference=difference, tolerance=tolerance)
        _remember(memo, sha256, Checked(numeric=False))
        return None
    if not compiled:
        if known is None:
            _remember(memo, sha256, Checked(numeric=True))
        return form
    return _compiled(positional, form, signature, known, memo, sha256, reference)


def _compiled(
    positional: Any,
    form: Any,
    signature: ModelSignature,
    known: Checked | None,
    memo: FormMemo | None,
    sha256: str,
    reference: np.ndarray | None,
) -> Any:
    """The compiled form of a version whose numeric form agreed, else that numeric form."""
    from driftloop.services.serving.core import compiled_form

    before = known.compiled if known is not None else "untried"
    if before in ("disagrees", "unconvertible"):
        return form  # it failed for these very bytes: it would fail again
    kind = form_memo.shape(positional)
    if before == "untried" and memo is not None and not memo.compiles(kind):
        _remember(memo, sha256, Checked(numeric=True, compiled="unconvertible"))
        return form
    # a graph that agreed for these bytes is rebuilt (its session is memory) but not re-checked
    got, outcome = compiled_form.build(
        positional, form, signature, check=before != "agrees", reference=reference
    )
    if memo is not None and sha256:
        memo.compiled(kind, sha256, outcome)
        memo.put(sha256, Checked(numeric=True, compiled=outcome))
    return got or form


def _remember(memo: FormMemo | None, sha256: str, checked: Checked) -> None:
    if memo is not None and sha256:
        memo.put(sha256, checked)


def check_sample(signature: ModelSignature, rows: int = CHECK_ROWS) -> np.ndarray:
    """Rows both forms must agree on: a different scale per column (a column mix-up shows), a
    row of zeros, and a row of NaN (the imputers' path)."""
    width = len(signature.features)
    rng = np.random.default_rng(20)
    sample = rng.normal(size=(rows, width)) * np.arange(1, width + 1) + np.arange(width)
    sample[0] = 0.0
    sample[1] = np.nan
    return sample


class StepChain:
    """The fitted steps of a pipeline whose ColumnTransformer sends every column, in order,
    through one transformer: each step's transform, then the estimator's predict_proba (or a
    regressor's predict). The same calls the pipeline makes, without its per-call wrapping
    (column selection, joblib, output containers, metadata routing), which costs more than the
    steps for a few rows."""

    def __init__(self, transforms: list[Any], final: Any) -> None:
        self.transforms = transforms
        self.final = final

    def _transform(self, x: np.ndarray) -> Any:
        for step in self.transforms:
            x = step.transform(x)
        return x

    def predict_proba(self, x: np.ndarray) -> Any:
        return self.final.predict_proba(self._transform(x))

    def predict(self, x: np.ndarray) -> Any:
        return self.final.predict(self._transform(x))


def positional_pipeline(pipeline: Any) -> Any:
    """A Pipeline of a copy of the fitted ColumnTransformer selecting columns by position (no
    feature names) and the same fitted final estimator (shared, never copied: it may be
    large)."""
    from sklearn.pipeline import Pipeline

    prep_name, prep = pipeline.steps[0]
    if len(pipeline.steps) != 2 or not hasattr(prep, "_transformer_to_input_indices"):
        raise TypeError("not a ColumnTransformer followed by an estimator")
    final_name, final = pipeline.steps[1]
    if hasattr(final, "feature_names_in_"):
        raise TypeError("the final estimator was fitted on named columns")
    prep = copy.deepcopy(prep)
    prep.transformers_ = [
        (name, step, list(prep._transformer_to_input_indices[name]))
        for name, step, _ in prep.transformers_
    ]
    _forget_feature_names(prep)
    return Pipeline([(prep_name, prep), (final_name, final)])


def _chain(prep: Any, final: Any) -> StepChain | None:
    """A StepChain when exactly one transformer takes all n_features_in_ columns in order and
    the others take none (or are dropped)."""
    width = prep.n_features_in_
    used = [
        (step, columns)
        for _, step, columns in prep.transformers_
        if len(columns) and not (isinstance(step, str) and step == "drop")
    ]
    if len(used) != 1 or isinstance(used[0][0], str) or list(used[0][1]) != list(range(width)):
        return None
    if getattr(prep, "sparse_output_", False):
        return None
    step = used[0][0]
    transforms = [s for _, s in step.steps] if hasattr(step, "steps") else [step]
    if any(isinstance(s, str) for s in transforms):
        return None  # "passthrough" inside: let the Pipeline handle it
    return StepChain(transforms, final)


def _forget_feature_names(step: Any) -> None:
    """Drop feature_names_in_ from a fitted step and the steps inside it, so scikit-learn takes
    a plain array without a warning per call."""
    if isinstance(step, str):
        return  # "drop" / "passthrough"
    if "feature_names_in_" in vars(step):
        del step.feature_names_in_
    for _, inner in getattr(step, "steps", ()):
        _forget_feature_names(inner)
    for _, inner, _ in getattr(step, "transformers_", ()):
        _forget_feature_names(inner)


def agrees(pipeline: Any, form: Any, signature: ModelSignature) -> tuple[bool, float]:
    """Whether `form` answers like `pipeline` on the check sample, and the largest difference
    between their class probabilities (a regressor: their predictions, relative to size)."""
    sample = check_sample(signature)
    frame = pd.DataFrame(sample, columns=[f.name for f in signature.features])
    if signature.task == "regression":
        difference = relative_difference(pipeline.predict(frame), form.predict(sample))
        return difference <= REGRESSION_TOLERANCE, difference
    expected = np.asarray(pipeline.predict_proba(frame), dtype=np.float64)
    got = np.asarray(form.predict_proba(sample), dtype=np.float64)
    if expected.shape != got.shape:
        return False, float("inf")
    difference = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    same_labels = bool((expected.argmax(axis=1) == got.argmax(axis=1)).all())
    return difference <= TOLERANCE and same_labels, difference


def relative_difference(expected: Any, got: Any) -> float:
    """The largest |got - expected| of two regressors' predictions, each relative to
    |expected| + the mean |expected| over all rows: relative, because a target may be counted
    in millions or in thousandths; plus the mean, so a prediction near zero is held to the
    digits its neighbours have, not to more. inf when the shapes differ, or one side is not
    finite (or not NaN) where the other is."""
    want = np.asarray(expected, dtype=np.float64).reshape(-1)
    have = np.asarray(got, dtype=np.float64).reshape(-1)
    if want.shape != have.shape:
        return float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(have)) or not np.array_equal(
        want[~finite], have[~finite], equal_nan=True
    ):
        return float("inf")
    want, have = want[finite], have[finite]
    if not want.size:
        return 0.0
    difference = np.abs(have - want)
    scale = np.abs(want) + np.mean(np.abs(want))
    with np.errstate(divide="ignore", invalid="ignore"):  # scale 0: exact or inf
        ratio = np.where(difference == 0, 0.0, difference / scale)
    return float(ratio.max())
