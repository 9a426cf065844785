"""Per-slice metrics on the holdout (candidate and champion), the seeded hyper-parameter search,
and their place in lineage and reproduction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import ModelSpec, SearchSpec
from driftloop.services.training.core.executor import lineage_params
from driftloop.services.training.core.reproduce import spec_from_lineage
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


def frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    segment = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    label = np.where(x + (segment == "a") > 0.5, "yes", "no")
    return pd.DataFrame(
        {"x": x, "segment": segment, "label": label, "_ingested_at": np.arange(n, dtype=float)}
    )


def test_slice_metrics_cover_every_value_and_add_up() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    spec = ModelSpec(slice_columns=("segment",))
    result = trainer.train_candidate("m", window, "label", spec)
    assert {s.value for s in result.slices} == {"a", "b", "c"}
    assert sum(s.rows for s in result.slices) == result.holdout_rows
    weighted = sum(s.rows * s.metrics["accuracy"] for s in result.slices) / result.holdout_rows
    assert weighted == pytest.approx(result.metrics["accuracy"])
    assert result.champion_slices == ()
    again = trainer.train_candidate("m", window, "label", spec, champion=result.pipeline)
    assert again.champion_slices == result.slices


def test_a_missing_slice_value_is_its_own_slice_and_unknown_columns_are_refused() -> None:
    df = frame()
    df["segment"] = df["segment"].astype(object)
    df.loc[df.index[-5:], "segment"] = None
    window = trainer.select_window(df, "label", 2000)
    result = trainer.train_candidate("m", window, "label", ModelSpec(slice_columns=("segment",)))
    assert dict((s.value, s.rows) for s in result.slices)[trainer.MISSING] == 5
    with pytest.raises(InvalidInput, match="slice columns"):
        trainer.train_candidate("m", window, "label", ModelSpec(slice_columns=("nope",)))


def test_grid_search_picks_and_records_the_best_params_deterministically() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    search = SearchSpec(param_grid={"C": "[0.001, 1.0]"}, cv=3, scoring="accuracy")
    spec = ModelSpec(search=search)
    a = trainer.train_candidate("m", window, "label", spec)
    b = trainer.train_candidate("m", window, "label", spec)
    assert a.search is not None and a.search.method == "grid" and a.search.candidates == 2
    assert a.search.best_params == {"C": "1.0"}
    assert a.pipeline.named_steps["model"].C == 1.0
    assert (a.metrics, a.search) == (b.metrics, b.search)
    params = lineage_params(spec, a, None)
    assert json.loads(params["search.best_params"]) == {"C": "1.0"}
    again, _ = spec_from_lineage(params)
    assert again.search == search


def test_a_grid_larger_than_max_candidates_is_sampled_with_the_seed() -> None:
    window = trainer.select_window(frame(), "label", 2000)
    grid = {"max_depth": "[2, 3, 4, 5]", "n_estimators": "[5, 10]"}
    spec = ModelSpec(
        estimator="random_forest", search=SearchSpec(param_grid=grid, cv=2, max_candidates=3)
    )
    a = trainer.train_candidate("m", window, "label", spec)
    b = trainer.train_candidate("m", window, "label", spec)
    assert a.search is not None and (a.search.method, a.search.candidates) == ("random", 3)
    assert a.search.best_params == b.search.best_params and a.metrics == b.metrics  # type: ignore[union-attr]
    assert set(a.search.best_params) == {"max_depth", "n_estimators"}
