"""The estimator and metric catalogue: the registry validates specs against exactly the
constructors training fits, and both name the spec field at fault."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer

from driftloop.services.registry.core import domain as registry_domain
from driftloop.services.registry.core.domain import PromotionPolicy, TrainingSpec, validate_spec
from driftloop.services.registry.core.specs import check_estimator
from driftloop.services.training.core import domain as training_domain
from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import ModelSpec
from driftloop.shared import estimators
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import ESTIMATORS, METRICS, SEED, SearchSpec

pytestmark = pytest.mark.unit
NAMES = sorted(ESTIMATORS)
FITTED_BEFORE = {
    "logistic_regression": LogisticRegression(max_iter=1000, random_state=0),
    "random_forest": RandomForestClassifier(random_state=0),
    "gradient_boosting": HistGradientBoostingClassifier(random_state=0),
}
"""What training constructed before the catalogue existed: trained models must not change."""


def registry_check(
    estimator: str, params: dict[str, str], search: SearchSpec | None = None
) -> None:
    """The registry's two checks of a spec, as SetSpec runs them."""
    spec = TrainingSpec(estimator=estimator, params=params, search=search or SearchSpec())
    check_estimator(validate_spec(spec, "y"), 50)


def training_params(estimator: str) -> dict[str, object]:
    return dict(trainer.make_estimator(ModelSpec(estimator=estimator)).get_params())


def test_the_catalogue_is_the_estimators_training_fitted_before() -> None:
    assert NAMES == sorted(FITTED_BEFORE)
    for name, before in FITTED_BEFORE.items():
        built = trainer.make_estimator(ModelSpec(estimator=name))
        assert type(built) is type(before), name
        assert repr(built.get_params()) == repr(before.get_params()), name


@pytest.mark.parametrize("name", NAMES)
def test_registry_validates_against_trainings_constructor_and_defaults(name: str) -> None:
    assert repr(ESTIMATORS[name].parameters()) == repr(training_params(name))
    assert ESTIMATORS[name].parameters().get("random_state", SEED) == SEED


@pytest.mark.parametrize("name", NAMES)
def test_registry_accepts_exactly_the_parameters_training_takes(name: str) -> None:
    taken = training_params(name)
    for param, default in taken.items():
        value = json.dumps(default)
        registry_check(name, {param: value})
        trainer.make_estimator(ModelSpec(estimator=name, params={param: value}))
        registry_check(name, {}, SearchSpec(param_grid={param: f"[{value}]"}, scoring="accuracy"))
    with pytest.raises(InvalidInput) as refused:
        registry_check(name, {"no_such_parameter": "1"})
    assert f"it has {sorted(taken)}" in str(refused.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"C": "-1"}, "spec field 'params.C': The 'C' parameter of LogisticRegression"),
        ({"depth": "3"}, "spec field 'params.depth': LogisticRegression has no parameter 'depth'"),
        ({"C": "oops"}, "spec field 'params.C': 'oops' is not a JSON value"),
    ],
)
def test_bad_parameters_name_the_field_in_registry_and_training(
    params: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry_check("logistic_regression", params)
    with pytest.raises(InvalidInput, match=message):
        trainer.make_estimator(ModelSpec(params=params))


def test_a_bad_grid_value_names_its_position() -> None:
    search = SearchSpec(param_grid={"max_depth": '[2, "x"]'}, scoring="accuracy")
    with pytest.raises(InvalidInput, match=r"spec field 'search\.param_grid\.max_depth\[1\]'"):
        registry_check("random_forest", {}, search)


def test_an_unknown_estimator_names_the_field_in_registry_and_training() -> None:
    message = r"spec field 'estimator': unknown estimator 'svm': use one of \['logistic_regression'"
    with pytest.raises(InvalidInput, match=message):
        registry_check("svm", {})
    with pytest.raises(InvalidInput, match=message):
        trainer.make_estimator(ModelSpec(estimator="svm"))


def test_an_unknown_metric_names_the_field() -> None:
    policy = TrainingSpec(policy=PromotionPolicy(metric="auc"))
    with pytest.raises(InvalidInput, match=r"'policy\.metric': unknown 'auc': use one of \["):
        validate_spec(policy, "y")
    search = SearchSpec(param_grid={"C": "[1, 2]"}, scoring="auc")
    with pytest.raises(InvalidInput, match=r"'search\.scoring': unknown 'auc'"):
        registry_check("logistic_regression", {}, search)


def test_registry_and_training_name_the_same_metrics() -> None:
    assert PromotionPolicy().metric == estimators.DEFAULT_METRIC in METRICS
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=60)})
    y = pd.Series(np.where(x["a"] > 0.3, "yes", "no"))
    pipeline = trainer.build_pipeline(x, ["a"], ModelSpec())
    pipeline.fit(x, y)
    scores = trainer.score(pipeline, x.assign(y=y), "y")
    assert set(scores) == {n for n, m in METRICS.items() if m.task == "classification"}
    # a champion lacking a feature of the data cannot score it: never right
    unscorable = trainer.predict_champion(pipeline, pd.DataFrame({"y": y}))
    assert set(unscorable) == {trainer.UNSCORABLE}
    for m in (m for m in METRICS.values() if m.task == "classification"):
        # the search's scorer is the same metric, higher-is-better, as the policy assumes
        assert get_scorer(m.scorer)(pipeline, x, y) == pytest.approx(scores[m.name]), m.name


def test_search_spec_is_one_type_and_round_trips_through_lineage() -> None:
    assert registry_domain.SearchSpec is training_domain.SearchSpec is SearchSpec
    search = SearchSpec(param_grid={"C": "[0.1, 1]", "tol": "[0.1, 0.01, 0.001]"}, cv=2)
    assert (search.size(), search.candidates()) == (6, 6)
    assert SearchSpec(**json.loads(json.dumps(asdict(search)))) == search
    sampled = SearchSpec(param_grid=search.param_grid, max_candidates=4)
    assert (sampled.size(), sampled.candidates()) == (6, 4)
    assert (SearchSpec().size(), SearchSpec().scoring) == (0, "")


def test_the_catalogue_loads_without_scikit_learn() -> None:
    code = (
        "import sys, driftloop.shared.estimators as e; e.estimator('random_forest'); "
        "sys.exit('sklearn' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 0
