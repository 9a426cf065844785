"""The estimators a spec may name, built exactly as training fits them, the metrics candidates are
scored and compared by, and the parameter search: one catalogue the registry and training share."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftloop.shared.errors import InvalidInput

SEED = 0
"""random_state of every estimator that has one, unless the spec sets it: equal specs on equal
rows fit equal models (reproduce.py relies on it)."""


@dataclass(frozen=True)
class Estimator:
    """One estimator a spec may name, and the constructor training fits it with."""

    name: str
    """What a spec writes (`estimator: random_forest`)."""
    cls: str
    """The scikit-learn class as `module:Class`, imported on first use: the registry reads the
    catalogue at start-up without loading scikit-learn."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments that differ from scikit-learn's; a spec's params override them."""

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


ESTIMATORS: dict[str, Estimator] = {
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
}


def estimator(name: str, where: str = "estimator") -> Estimator:
    """The catalogue entry `name`; InvalidInput naming spec field `where` if there is none."""
    if name not in ESTIMATORS:
        raise InvalidInput(
            f"spec field {where!r}: unknown estimator {name!r}: use one of {list(ESTIMATORS)}"
        )
    return ESTIMATORS[name]


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
    """A holdout metric. Every one is higher-is-better: the promotion policy's floor and margin
    and the search's choice of the best parameters both assume so."""

    name: str
    """The name in specs (policy.metric, search.scoring) and in a version's metrics."""
    scorer: str
    """The scikit-learn scorer the search cross-validates with."""
    compute: Callable[[Any, Any], float]
    """(true labels, predicted labels) -> value, labels as strings."""


def _accuracy(truth: Any, predicted: Any) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(truth, predicted))


def _f1_macro(truth: Any, predicted: Any) -> float:
    from sklearn.metrics import f1_score

    # why zero_division=0: a class never predicted on a small holdout scores 0, not a warning
    return float(f1_score(truth, predicted, average="macro", zero_division=0))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (Metric("accuracy", "accuracy", _accuracy), Metric("f1_macro", "f1_macro", _f1_macro))
}
DEFAULT_METRIC = "accuracy"
"""The policy metric, and the search's scoring, when a spec names none."""


def metric(name: str, where: str) -> Metric:
    """The catalogue entry `name`; InvalidInput naming spec field `where` if there is none."""
    if name not in METRICS:
        raise InvalidInput(f"spec field {where!r}: unknown {name!r}: use one of {list(METRICS)}")
    return METRICS[name]


def score(truth: Any, predicted: Any) -> dict[str, float]:
    """Every catalogue metric of `predicted` against `truth` (labels as strings)."""
    return {m.name: m.compute(truth, predicted) for m in METRICS.values()}


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
