"""The compiled form of an all-numeric pipeline: ONNX Runtime running the graph skl2onnx derives
from the pipeline's numeric form, at deploy time, from the loaded (hash-checked) skops pipeline.

scikit-learn spends ~0.4 ms validating each call however few the rows; ONNX Runtime runs the same
steps in ~25 us. The graph computes in float32 (ONNX Runtime's imputer has no float64 kernel), so
it is used only when, on the check rows, every class probability is within TOLERANCE of
scikit-learn's and every label is the same (a regressor: every prediction within
REGRESSION_TOLERANCE, relative); otherwise the version is served by the scikit-learn form. The
check rows are the version's reference sample (the training values its profile keeps,
reference_sample.py), plus rows drawn from the model's own scaler statistics and a row of NaN
(they reach past the sample: extrapolation, the imputer); without a readable profile, those
synthetic rows alone. Rows a float32 cannot hold, and answers that are not
finite, are scored by the scikit-learn form too. The skops artifact stays the source of truth:
nothing compiled is ever stored or loaded from outside.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import structlog

from driftloop.services.serving.core.numeric_form import relative_difference
from driftloop.shared.artifacts import ModelSignature

log = structlog.get_logger(__name__)

TOLERANCE = 1e-4
"""Largest absolute difference allowed between a compiled and a scikit-learn class probability
on the check rows, reference and synthetic alike (labels must be identical)."""
REGRESSION_TOLERANCE = 1e-4
"""Largest difference allowed between a compiled and a scikit-learn regressor's prediction on
the check rows, relative to |prediction| + the mean |prediction| of those rows
(numeric_form.relative_difference). A float32 holds ~7 significant digits; linear models come
within ~1e-6 through the graph's steps, so 1e-4 catches only a real change of answer."""
CHECK_ROWS = 256
"""Synthetic check rows (realistic_sample) for a classifier, besides the reference rows."""
REGRESSION_CHECK_ROWS = 1024
"""Check rows for a regressor. why more than a classifier's 256: float32 rounding that moves a
value across a tree's split changes a regressor's answer by that leaf's share, where it rarely
changes a class; more rows make such a model likelier to be caught (and left to
scikit-learn) at deploy time, for a few ms more."""
OPSET = 18
"""The ONNX opset the graph is written for (ONNX Runtime 1.31 runs 7-23)."""


class CompiledForm:
    """predict_proba (a classifier's) or predict (a regressor's) through ONNX Runtime, with
    `fallback` (the scikit-learn numeric form) for rows a float32 cannot represent and for
    answers that are not finite."""

    def __init__(
        self, session: Any, fallback: Any, output: str = "probabilities", graph_bytes: int = 0
    ) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = output
        self.fallback = fallback
        self.graph_bytes = graph_bytes
        """Size of the serialized ONNX graph the session runs (model_cache's memory estimate)."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        got = self._run(x)
        if got is None:
            return np.asarray(self.fallback.predict_proba(x), dtype=np.float64)
        return got

    def predict(self, x: np.ndarray) -> np.ndarray:
        got = self._run(x)
        if got is None:
            return np.asarray(self.fallback.predict(x), dtype=np.float64).reshape(-1)
        return got.reshape(-1)

    def _run(self, x: np.ndarray) -> np.ndarray | None:
        """The graph's answer in float64; None when the fallback must answer."""
        with np.errstate(over="ignore"):  # a value past float32's range becomes inf: checked
            x32 = x.astype(np.float32)
        if np.isinf(x32).any():
            return None
        (answer,) = self._session.run([self._output], {self._input: x32})
        if not np.isfinite(answer).all():
            return None
        return np.asarray(answer, dtype=np.float64)


Outcome = Literal["agrees", "disagrees", "unconvertible"]
"""What compiling a version found: its graph agrees with scikit-learn on the check rows, it
disagrees, or no graph could be built (skl2onnx or ONNX Runtime raised)."""


def compile_form(
    positional: Any, fallback: Any, signature: ModelSignature, reference: np.ndarray | None = None
) -> CompiledForm | None:
    """The compiled form of `positional` (a fitted Pipeline taking an [N, F] matrix), checked
    against `fallback` on the check rows; None when it cannot be built or does not agree."""
    return build(positional, fallback, signature, reference=reference)[0]


def build(
    positional: Any,
    fallback: Any,
    signature: ModelSignature,
    *,
    check: bool = True,
    reference: np.ndarray | None = None,
) -> tuple[CompiledForm | None, Outcome]:
    """compile_form, saying why there is no form. `reference`: the version's reference rows
    ([N, F], reference_sample.from_profile), checked before the synthetic ones; None: synthetic
    rows only. With `check` False the graph is built without comparing it to scikit-learn:
    only for a version whose graph was built and checked from the same hash-checked bytes
    before (form_memo.py)."""
    regression = signature.task == "regression"
    try:
        session, graph_bytes = _session(positional, len(signature.features), regression=regression)
        output = session.get_outputs()[0].name if regression else "probabilities"
        form = CompiledForm(session, fallback, output, graph_bytes)
    except Exception as exc:  # noqa: BLE001 - optional: the scikit-learn form still serves
        log.info("compiled_form_unavailable", reason=_reason(exc))
        return None, "unconvertible"
    if not check:
        return form, "agrees"
    rows = REGRESSION_CHECK_ROWS if regression else CHECK_ROWS
    sample = check_sample(positional, signature, reference, rows=rows)
    checked = {"reference_rows": 0 if reference is None else len(reference), "synthetic_rows": rows}
    try:
        if regression:
            difference = relative_difference(fallback.predict(sample), form.predict(sample))
        else:
            expected = np.asarray(fallback.predict_proba(sample), dtype=np.float64)
            got = form.predict_proba(sample)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot answer the rows disagrees
        log.info("compiled_form_unavailable", reason=_reason(exc))
        return None, "disagrees"
    if regression:
        if difference > REGRESSION_TOLERANCE:
            log.warning(
                "compiled_form_disagrees",
                max_relative_difference=difference,
                tolerance=REGRESSION_TOLERANCE,
                **checked,
            )
            return None, "disagrees"
        return form, "agrees"
    difference = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    same_labels = expected.shape == got.shape and bool(
        (expected.argmax(axis=1) == got.argmax(axis=1)).all()
    )
    if not same_labels or difference > TOLERANCE:
        log.warning(
            "compiled_form_disagrees",
            max_difference=difference,
            tolerance=TOLERANCE,
            same_labels=same_labels,
            **checked,
        )
        return None, "disagrees"
    return form, "agrees"


def _reason(exc: Exception) -> str:
    """An exception as a log field, cut short: skl2onnx's messages embed whole node
    attributes (megabytes for a large ensemble)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:500]}"


def _session(positional: Any, width: int, *, regression: bool = False) -> tuple[Any, int]:
    """The ONNX Runtime session of `positional` and the size of its serialized graph."""
    import onnxruntime
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    final = positional.steps[-1][1]
    # a classifier's probabilities as one [N, C] tensor (not a list of dicts); a regressor
    # has one output and no such option
    converter_options = None if regression else {id(final): {"zipmap": False}}
    graph = to_onnx(
        positional,
        initial_types=[("input", FloatTensorType([None, width]))],
        options=converter_options,
        target_opset=OPSET,
    )
    options = onnxruntime.SessionOptions()
    # one thread: serving's event loop already keeps a core busy; a pool would fight it
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    serialized = graph.SerializeToString()
    session = onnxruntime.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    return session, len(serialized)


def check_sample(
    positional: Any, signature: ModelSignature, reference: np.ndarray | None, rows: int
) -> np.ndarray:
    """The rows a compiled form must agree on: the reference rows (when given) and then
    `rows` synthetic ones (realistic_sample, its NaN row included)."""
    synthetic = realistic_sample(positional, signature, rows=rows)
    if reference is None:
        return synthetic
    return np.vstack([np.asarray(reference, dtype=np.float64), synthetic])


def realistic_sample(
    positional: Any, signature: ModelSignature, rows: int = CHECK_ROWS
) -> np.ndarray:
    """Rows around the training data: mean + N(0, 1) * scale of the pipeline's fitted scaler
    when it has one over all columns (where float32 rounding would show), else unit normal
    rows at a different scale per column; plus a row of NaN (the imputer's path)."""
    width = len(signature.features)
    rng = np.random.default_rng(21)
    center, spread = np.arange(width, dtype=np.float64), np.arange(1, width + 1, dtype=np.float64)
    for step in _fitted_steps(positional):
        mean, scale = getattr(step, "mean_", None), getattr(step, "scale_", None)
        if mean is not None and scale is not None and np.shape(mean) == (width,):
            center, spread = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=float)
            break
    sample = center + rng.normal(size=(rows, width)) * spread
    sample[0] = np.nan
    return sample


def _fitted_steps(step: Any) -> list[Any]:
    """`step` and every step inside it (Pipeline steps, ColumnTransformer transformers)."""
    found = [step]
    for _, inner in getattr(step, "steps", ()):
        found += _fitted_steps(inner)
    for _, inner, _ in getattr(step, "transformers_", ()):
        if not isinstance(inner, str):
            found += _fitted_steps(inner)
    return found
