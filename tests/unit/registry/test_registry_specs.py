"""YAML training specs: strict parsing with errors naming the field, scikit-learn parameter and
search-grid checks, immutable spec versions, and the migration that versions existing specs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from driftloop.services.registry.core.domain import SearchSpec, TrainingSpec
from driftloop.services.registry.core.migrations import MIGRATIONS
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.specs import parse_yaml, schedule_seconds
from driftloop.services.registry.core.store import RegistryStore
from driftloop.shared.errors import InvalidInput, NotFound, TooLarge

pytestmark = pytest.mark.unit

SPEC = """
dataset: customers
target: churned
estimator: random_forest
params: {n_estimators: 20, max_depth: 4, class_weight: balanced, min_samples_leaf: "2"}
slice_column: segment
search:
  param_grid: {max_depth: [3, 5, 8], n_estimators: [10, 20]}
  cv: 3
schedule: every 6h
policy: {metric: f1_macro, mode: approval, slice_tolerance: 0.03, min_slice_rows: 50}
"""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    store = RegistryStore(tmp_path / "registry.db")
    yield Registry(store, max_search_candidates=10)
    store.close()


def test_yaml_spec_parses_every_field() -> None:
    parsed = parse_yaml(SPEC)
    s = parsed.spec
    assert (parsed.dataset, parsed.target) == ("customers", "churned")
    assert s.params == {
        "n_estimators": "20",
        "max_depth": "4",
        "class_weight": '"balanced"',
        "min_samples_leaf": "2",
    }
    assert s.slice_columns == ("segment",)
    assert s.search.param_grid == {"max_depth": "[3, 5, 8]", "n_estimators": "[10, 20]"}
    assert s.search.size() == 6 and s.schedule_seconds == 6 * 3600
    assert (s.policy.metric, s.policy.slice_tolerance, s.policy.min_slice_rows) == (
        "f1_macro",
        0.03,
        50,
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("estimatr: random_forest", "'estimatr' is unknown"),
        ("policy: {margn: 0.1}", "'policy.margn' is unknown"),
        ("search: {grid: {}}", "'search.grid' is unknown"),
        ("window_rows: lots", "'window_rows' must be a whole number"),
        ("policy: {margin: high}", "'policy.margin' must be a number"),
        ("schedule: sometimes", "'schedule'"),
        ("features: 3", "'features' must be a list"),
        ("search: {param_grid: {C: []}}", "'search.param_grid.C' must be a non-empty list"),
        ("[1, 2]", "'spec' must be a mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_yaml_names_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace(".", r"\.")):
        parse_yaml(text)


def test_schedule_forms() -> None:
    assert [schedule_seconds(v) for v in ("every 6h", "30m", "90s", "1d", 120, "off", None)] == [
        21600,
        1800,
        90,
        86400,
        120,
        0,
        0,
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("estimator: xgboost", "'estimator': unknown estimator 'xgboost'"),
        ("params: {C: -1}", "'params.C': The 'C' parameter of LogisticRegression"),
        ("params: {depth: 3}", "'params.depth': LogisticRegression has no parameter 'depth'"),
        (
            "estimator: random_forest\nsearch: {param_grid: {max_depth: [2, x]}}",
            r"'search.param_grid.max_depth\[1\]'",
        ),
        ("search: {param_grid: {C: [1, 2]}, cv: 1}", "'search.cv': 1 folds"),
        ("search: {param_grid: {C: [1, 2]}, scoring: auc}", "'search.scoring': unknown 'auc'"),
        (
            "search: {param_grid: {C: [1, 2, 3, 4], tol: [0.1, 0.01, 0.001]}}",
            "12 parameter combinations exceed the limit of 10",
        ),
        ("dataset: other", "spec field 'dataset' is 'other'"),
        ("target: churned\nslice_columns: [churned]", "cannot be a slice column"),
    ],
)
def test_registry_refuses_bad_specs_naming_the_field(
    registry: Registry, text: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        registry.create_model("m", "customers", "churned", TrainingSpec(), text)


def test_large_grid_is_accepted_when_sampled_down(registry: Registry) -> None:
    text = "search: {param_grid: {C: [1, 2, 3, 4], tol: [0.1, 0.01, 0.001]}, max_candidates: 5}"
    model = registry.create_model("m", "customers", "churned", TrainingSpec(), text)
    assert model.spec.search.candidates() == 5 and model.spec.search.scoring == "accuracy"


def test_a_grid_of_2_pow_63_combinations_is_refused_even_when_sampled(
    registry: Registry,
) -> None:
    # the probe: 63 parameters of 2 values each, max_candidates 2 (the run died of OverflowError)
    grid = {f"p{i}": "[1, 2]" for i in range(63)}
    spec = TrainingSpec(search=SearchSpec(param_grid=grid, max_candidates=2))
    with pytest.raises(TooLarge, match=r"9223372036854775808 combinations; the limit is 1000000"):
        registry.create_model("m", "customers", "churned", spec)


def test_a_parameter_with_200000_values_is_refused_before_any_is_checked(
    registry: Registry,
) -> None:
    values = "[" + ", ".join(str(0.5 + i) for i in range(200_000)) + "]"
    spec = TrainingSpec(search=SearchSpec(param_grid={"C": values}, max_candidates=2))
    with pytest.raises(TooLarge, match=r"'search.param_grid.C' lists 200000 values; the limit"):
        registry.create_model("m", "customers", "churned", spec)


def test_spec_versions_are_immutable_and_unchanged_specs_add_none(registry: Registry) -> None:
    model = registry.create_model("m", "", "", TrainingSpec(), SPEC, author="operator:ann")
    assert (model.dataset, model.target, model.spec_version) == ("customers", "churned", 1)
    first = registry.get_spec("m")
    assert (first.number, first.author, len(first.sha256)) == (1, "operator:ann", 64)
    same = registry.set_spec("m", TrainingSpec(), SPEC, author="operator:bob")
    assert same.number == 1 and same.author == "operator:ann"
    second = registry.set_spec(
        "m", TrainingSpec(), SPEC.replace("every 6h", "every 1h"), "operator:bob", "hourly"
    )
    assert (second.number, second.author, second.comment) == (2, "operator:bob", "hourly")
    assert second.sha256 != first.sha256
    assert registry.get_model("m").spec_version == 2
    assert registry.get_model("m").spec.schedule_seconds == 3600
    assert registry.get_spec("m", 1).spec.schedule_seconds == 6 * 3600
    assert [v.number for v in registry.list_specs("m")] == [1, 2]
    with pytest.raises(NotFound):
        registry.get_spec("m", 9)
    with pytest.raises(InvalidInput, match="fixed when the model is declared"):
        registry.set_spec("m", TrainingSpec(), "target: other")
    actions = [a.action for a in registry.history("m").audit]
    assert actions == ["create", "set_spec"]


def test_schema_2_database_gets_spec_version_1_with_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    old_spec = TrainingSpec().to_json().replace(', "schedule_seconds": 0', "")
    conn.execute(
        "INSERT INTO models (name, dataset, target, spec_json, created_at)"
        " VALUES ('m', 'd', 'y', ?, 5.0)",
        (old_spec,),
    )
    conn.commit()
    conn.close()
    store = RegistryStore(path)
    try:
        registry = Registry(store)
        (first,) = registry.list_specs("m")
        assert (first.number, first.author, first.created_at) == (1, "migration", 5.0)
        assert first.sha256 == TrainingSpec().sha256()
        assert registry.get_model("m").spec_version == 1
    finally:
        store.close()


def test_the_yaml_the_cli_prints_reads_back_as_the_same_spec(registry: Registry) -> None:
    import yaml

    from driftloop.services.registry.adapters.pb import spec_to_pb
    from driftloop.shared.cli.commands.registry import spec_document

    model = registry.create_model("m", "", "", TrainingSpec(), SPEC)
    printed = yaml.safe_dump(spec_document(spec_to_pb(model.spec)), sort_keys=False)
    again = registry.set_spec("m", TrainingSpec(), printed)
    assert again.number == 1  # same hash: no new version


def test_oversized_spec_is_refused_before_parsing() -> None:
    text = "features: [" + ", ".join(f"c{i}" for i in range(20_000)) + "]"
    with pytest.raises(TooLarge, match="limit is 65536"):
        parse_yaml(text)


def test_long_column_lists_are_refused_naming_the_field() -> None:
    text = "features: [" + ", ".join("c" for _ in range(10_001)) + "]"
    with pytest.raises(TooLarge, match="'features' lists 10001 columns"):
        parse_yaml(text)


def test_yaml_aliases_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(InvalidInput, match="anchors and aliases"):
        parse_yaml(bomb + "params: {grid: [*b, *b, *b, *b, *b, *b, *b, *b, *b]}")
