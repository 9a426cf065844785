"""The estimators a spec may name, built exactly as training fits them, the metrics candidates are
scored and compared by, and the parameter search: one catalogue the registry and training share."""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.shared.errors import InvalidInput

SEED = 0
"""random_state of every estimator that has one, unless the spec sets it: equal specs on equal
rows fit equal models (reproduce.py relies on it)."""


TASKS = ("classification", "regression")
"""What a spec's `task` may be; "" (proto3's unset) means classification."""
CLASSIFICATION, REGRESSION = TASKS


def task_of(name: str, where: str = "task") -> str:
    """The task `name` means ("" is classification); InvalidInput naming spec field `where`."""
    if name in ("", CLASSIFICATION):
        return CLASSIFICATION
    if name == REGRESSION:
        return REGRESSION
    raise InvalidInput(f"spec field {where!r}: unknown task {name!r}: use one of {list(TASKS)}")


@dataclass(frozen=True)
class Estimator:
    """One estimator a spec may name, and the constructor training fits it with."""

    name: str
    """What a spec writes (`estimator: random_forest`, or a scikit-learn path)."""
    cls: str
    """The scikit-learn class as `module:Class`, imported on first use: the registry reads the
    catalogue at start-up without loading scikit-learn."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments that differ from scikit-learn's; a spec's params override them."""
    task: str = CLASSIFICATION

    def new(self) -> Any:
        """A fresh instance with the catalogue's defaults: what training fits."""
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)(**self.defaults)

    def parameters(self) -> dict[str, Any]:
        """Every constructor parameter and its default here."""
        return dict(self.new().get_params())

    def check(self, where: str, param: str, value: Any) -> None:
        """InvalidInput naming spec field `where` unless `param`=`value` is accepted."""
        instance = self.new()
        known = instance.get_params()
        if param not in known:
            raise InvalidInput(
                f"spec field {where!r}: {type(instance).__name__} has no parameter {param!r}; "
                f"it has {sorted(known)}"
            )
        try:
            instance.set_params(**{param: value})
            # why: the same check fit() runs first, without needing data; set_params alone
            # accepts any value and a bad one would only fail mid-run
            instance._validate_params()
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"spec field {where!r}: {exc}") from exc

    def build(self, params: Mapping[str, str]) -> Any:
        """A checked instance with `params` (name -> JSON text) set over the defaults."""
        decoded = {name: decode_param(f"params.{name}", text) for name, text in params.items()}
        for name, value in decoded.items():
            self.check(f"params.{name}", name, value)
        return self.new().set_params(**decoded)


CATALOGUE: dict[str, dict[str, Estimator]] = {
    CLASSIFICATION: {
        e.name: e
        for e in (
            # why max_iter: scikit-learn's 100 can stop lbfgs before it converges; training has
            # always fitted with 1000, and another default would change every model it trains
            Estimator(
                "logistic_regression",
                "sklearn.linear_model:LogisticRegression",
                {"max_iter": 1000, "random_state": SEED},
            ),
            Estimator(
                "random_forest", "sklearn.ensemble:RandomForestClassifier", {"random_state": SEED}
            ),
            # why the histogram variant under this name: it is what training has always fitted
            Estimator(
                "gradient_boosting",
                "sklearn.ensemble:HistGradientBoostingClassifier",
                {"random_state": SEED},
            ),
        )
    },
    REGRESSION: {
        e.name: e
        for e in (
            Estimator("ridge", "sklearn.linear_model:Ridge", task=REGRESSION),
            Estimator(
                "random_forest",
                "sklearn.ensemble:RandomForestRegressor",
                {"random_state": SEED},
                REGRESSION,
            ),
            Estimator(
                "gradient_boosting",
                "sklearn.ensemble:HistGradientBoostingRegressor",
                {"random_state": SEED},
                REGRESSION,
            ),
        )
    },
}
"""The short names per task; any allow-listed scikit-learn path works besides (`allowed`)."""
ESTIMATORS = CATALOGUE[CLASSIFICATION]
"""The classification names (the default task)."""
DEFAULT_ESTIMATOR = {CLASSIFICATION: "logistic_regression", REGRESSION: "gradient_boosting"}

_PATH = re.compile(r"^sklearn(\.[a-z_][a-z0-9_]*)+\.[A-Z][A-Za-z0-9]*$")
_EXCLUDED = frozenset(
    {
        # one target column is what driftloop trains: multi-output and 1-D-only estimators
        # would fail mid-run on every spec that names them
        "CCA",
        "PLSCanonical",
        "IsotonicRegression",
        "ClassifierChain",
        "RegressorChain",
        "MultiOutputClassifier",
        "MultiOutputRegressor",
        "MultiTaskElasticNet",
        "MultiTaskElasticNetCV",
        "MultiTaskLasso",
        "MultiTaskLassoCV",
    }
)
_ESTIMATOR_PARAMS = frozenset(
    {"estimator", "estimators", "base_estimator", "final_estimator", "regressor", "classifier"}
)
"""Parameters that take another estimator object: a JSON parameter cannot express one."""


def allowed(task: str) -> dict[str, Estimator]:
    """The scikit-learn paths a spec of `task` may name, as catalogue entries: every
    classifier (regressor) scikit-learn lists, except meta-estimators (they take estimator
    objects, which JSON parameters cannot express) and multi-output or 1-D-only ones. Those
    with a random_state get SEED, like the short names."""
    return {e.name: e for e in _allowed(task)}


@functools.cache
def _allowed(task: str) -> tuple[Estimator, ...]:
    import inspect

    from sklearn.utils.discovery import all_estimators

    kind = "classifier" if task == CLASSIFICATION else "regressor"
    found = []
    for name, cls in all_estimators(type_filter=kind):
        if name in _EXCLUDED:
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        if any(p.name in _ESTIMATOR_PARAMS for p in params) or any(
            p.default is inspect.Parameter.empty
            for p in params
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ):
            continue
        public = ".".join(cls.__module__.split(".")[:2])
        module = importlib.import_module(public)
        where = public if getattr(module, name, None) is cls else cls.__module__
        seeded = {"random_state": SEED} if any(p.name == "random_state" for p in params) else {}
        found.append(Estimator(f"{where}.{name}", f"{where}:{name}", seeded, task))
    return tuple(sorted(found, key=lambda e: e.name))


def estimator(name: str, where: str = "estimator", task: str = CLASSIFICATION) -> Estimator:
    """The catalogue entry `name` for `task` (a short name or an allow-listed scikit-learn
    path); InvalidInput naming spec field `where` if there is none."""
    names = CATALOGUE[task_of(task)]
    if name in names:
        return names[name]
    if "." in name:
        if not _PATH.match(name):
            raise InvalidInput(
                f"spec field {where!r}: {name!r} is not a scikit-learn path "
                "(write it as sklearn.<module>.<Class>, e.g. sklearn.linear_model.Ridge)"
            )
        paths = allowed(task_of(task))
        if name not in paths:
            other = REGRESSION if task_of(task) == CLASSIFICATION else CLASSIFICATION
            hint = (
                f"it is a {other} estimator: set task: {other}"
                if name in allowed(other)
                else "meta-estimators, multi-output estimators and anything outside "
                "scikit-learn's own estimators are refused"
            )
            raise InvalidInput(
                f"spec field {where!r}: {name!r} is not on the {task_of(task)} allow-list ({hint})"
            )
        return paths[name]
    raise InvalidInput(
        f"spec field {where!r}: unknown estimator {name!r}: use one of {list(names)} "
        "or a scikit-learn path such as "
        + ("sklearn.linear_model.Ridge" if task_of(task) == REGRESSION else "sklearn.svm.SVC")
    )


def decode_param(where: str, text: str) -> Any:
    """A parameter value from its JSON text; InvalidInput naming spec field `where` if it is
    not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"spec field {where!r}: {text!r} is not a JSON value "
            '(write strings quoted, e.g. "\\"balanced\\"")'
        ) from exc


@dataclass(frozen=True)
class Metric:
    """A holdout metric of one task. `higher_is_better` tells the promotion policy and the
    parameter search which way is better: a floor is a minimum for accuracy and a maximum for
    MAE, and a margin always means "at least this much better"."""

    name: str
    """The name in specs (policy.metric, search.scoring) and in a version's metrics."""
    scorer: str
    """The scikit-learn scorer the search cross-validates with (higher is better, always:
    error metrics use scikit-learn's negated scorers)."""
    compute: Callable[[Any, Any], float]
    """(truth, predictions) -> value: labels as strings (classification), floats
    (regression); NaN when the metric is undefined on these rows (MAPE on a target that
    reaches zero)."""
    task: str = CLASSIFICATION
    higher_is_better: bool = True

    def better(self, value: float, than: float) -> bool:
        """Whether `value` is strictly better than `than`."""
        return value > than if self.higher_is_better else value < than

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better `candidate` is (negative: worse), the policy's unit for margins: the
        plain difference for a score in [0, 1] (accuracy, F1, R²), the relative reduction for
        an error (MAE 9.0 vs 10.0 is 0.10 better), so one margin fits every target's scale."""
        if self.higher_is_better:
            return candidate - champion
        if champion == 0:
            return 0.0 if candidate == 0 else -math.inf
        return (champion - candidate) / abs(champion)


def _accuracy(truth: Any, predicted: Any) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(truth, predicted))


def _f1_macro(truth: Any, predicted: Any) -> float:
    from sklearn.metrics import f1_score

    # why zero_division=0: a class never predicted on a small holdout scores 0, not a warning
    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def _numbers(truth: Any, predicted: Any) -> tuple[Any, Any]:
    import numpy as np

    return np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)


def _mae(truth: Any, predicted: Any) -> float:
    y, p = _numbers(truth, predicted)
    return float(abs(y - p).mean()) if len(y) else math.nan


def _rmse(truth: Any, predicted: Any) -> float:
    y, p = _numbers(truth, predicted)
    return float(math.sqrt(((y - p) ** 2).mean())) if len(y) else math.nan


def _r2(truth: Any, predicted: Any) -> float:
    y, p = _numbers(truth, predicted)
    if len(y) < 2:
        return math.nan
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - p) ** 2).sum())
    if total == 0:
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def _mape(truth: Any, predicted: Any) -> float:
    """Mean absolute percentage error, only where the target never reaches or crosses zero
    (elsewhere a percentage of a value near zero means nothing): NaN then."""
    y, p = _numbers(truth, predicted)
    if not len(y) or not (bool((y > 0).all()) or bool((y < 0).all())):
        return math.nan
    return float((abs(y - p) / abs(y)).mean())


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "accuracy", _accuracy),
        Metric("f1_macro", "f1_macro", _f1_macro),
        Metric("mae", "neg_mean_absolute_error", _mae, REGRESSION, higher_is_better=False),
        Metric("rmse", "neg_root_mean_squared_error", _rmse, REGRESSION, higher_is_better=False),
        Metric("r2", "r2", _r2, REGRESSION),
        Metric(
            "mape", "neg_mean_absolute_percentage_error", _mape, REGRESSION, higher_is_better=False
        ),
    )
}
DEFAULT_METRIC = "accuracy"
"""The policy metric, and the search's scoring, when a classification spec names none."""
DEFAULT_METRICS = {CLASSIFICATION: DEFAULT_METRIC, REGRESSION: "mae"}
"""The default policy metric per task."""


def metric(name: str, where: str, task: str = "") -> Metric:
    """The catalogue entry `name`; InvalidInput naming spec field `where` if there is none, or
    (when `task` is given) if it measures another task."""
    if name not in METRICS:
        known = [m for m, v in METRICS.items() if not task or v.task == task_of(task)]
        raise InvalidInput(f"spec field {where!r}: unknown {name!r}: use one of {known}")
    found = METRICS[name]
    if task and found.task != task_of(task):
        known = [m for m, v in METRICS.items() if v.task == task_of(task)]
        raise InvalidInput(
            f"spec field {where!r}: {name!r} measures {found.task}, the spec's task is "
            f"{task_of(task)}: use one of {known}"
        )
    return found


def score(truth: Any, predicted: Any, task: str = CLASSIFICATION) -> dict[str, float]:
    """Every catalogue metric of `task` of `predicted` against `truth` (labels as strings for
    classification, numbers for regression); a metric undefined on these rows is left out."""
    found = {}
    for m in METRICS.values():
        if m.task == task_of(task):
            value = m.compute(truth, predicted)
            if not math.isnan(value):
                found[m.name] = value
    return found


@dataclass(frozen=True)
class SearchSpec:
    """A small hyper-parameter search; an empty grid means none.

    The registry stores it in a training spec and training runs it: one type, so the grid the
    registry checked is the grid training fits.
    """

    param_grid: dict[str, str] = field(default_factory=dict)
    """Estimator parameter -> JSON list of values."""
    cv: int = 3
    max_candidates: int = 0
    """At most this many combinations, sampled with SEED when the grid is larger; 0: all."""
    scoring: str = ""
    """A metric name; "" (proto3's unset) means the policy metric, which the registry fills in."""

    def size(self) -> int:
        """Combinations in the full grid."""
        total = 1
        for values in self.param_grid.values():
            total *= len(json.loads(values))
        return total if self.param_grid else 0

    def candidates(self) -> int:
        """Combinations actually tried."""
        size = self.size()
        return min(size, self.max_candidates) if self.max_candidates else size
