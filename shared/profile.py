"""The reference profile: what a model's training data looked like, for the monitor to compare.

Training builds it from the training window and stores it beside the artifact; monitoring
loads the production version's profile and tests live windows against it.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

PREDICTION = "_prediction"
TARGET = "_label"


class FeatureProfile(BaseModel):
    name: str
    kind: Literal["numeric", "categorical"]
    count: int
    null_fraction: float
    sample: list[float] = []
    """A uniform random sample of the values (numeric), for exact two-sample tests."""
    quantiles: dict[str, float] = {}
    frequencies: dict[str, float] = {}
    """Relative frequency of each category (categorical)."""


class ReferenceProfile(BaseModel):
    model: str
    version: str
    rows: int
    features: list[FeatureProfile]
    prediction: FeatureProfile | None = None
    target: FeatureProfile | None = None
    """The training labels, for label-distribution (prior) drift: categorical for a classifier,
    numeric for a regressor (target drift); optional."""
    task: Literal["classification", "regression"] = "classification"
    """What the version predicts: class labels, or numbers (profiles written before regression
    existed are classification)."""
    metrics: dict[str, float] = {}
    """Held-out metrics of the version (e.g. "accuracy"), the monitor's performance reference;
    optional: without it the monitor takes its first labelled live window as the reference."""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes) -> ReferenceProfile:
        return cls.model_validate(json.loads(data))

    def feature(self, name: str) -> FeatureProfile | None:
        return next((f for f in self.features if f.name == name), None)


def profile_column(name: str, values: pd.Series, *, max_sample: int, seed: int) -> FeatureProfile:
    count = int(len(values))
    nulls = float(values.isna().mean()) if count else 0.0
    present = values.dropna()
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        arr = present.to_numpy(dtype=float)
        rng = np.random.default_rng(seed)
        sample = arr if len(arr) <= max_sample else rng.choice(arr, max_sample, replace=False)
        qs = np.quantile(arr, [0.01, 0.25, 0.5, 0.75, 0.99]).tolist() if len(arr) else []
        return FeatureProfile(
            name=name,
            kind="numeric",
            count=count,
            null_fraction=nulls,
            sample=[float(v) for v in sample],
            quantiles=dict(zip(["p01", "p25", "p50", "p75", "p99"], qs, strict=False)),
        )
    freqs = present.astype(str).value_counts(normalize=True)
    return FeatureProfile(
        name=name,
        kind="categorical",
        count=count,
        null_fraction=nulls,
        frequencies={str(k): float(v) for k, v in freqs.items()},
    )


def build_profile(
    model: str,
    version: str,
    features: pd.DataFrame,
    predictions: pd.Series | None = None,
    *,
    target: pd.Series | None = None,
    metrics: dict[str, float] | None = None,
    max_sample: int = 2000,
    seed: int = 0,
    task: Literal["classification", "regression"] = "classification",
) -> ReferenceProfile:
    """Profile every column of `features` (and the predictions, labels and metrics, when given).

    Labels are profiled under the name TARGET: as categories for classification (targets are
    class strings), as numbers for regression (as are the predictions then).
    """
    return ReferenceProfile(
        model=model,
        version=version,
        rows=len(features),
        features=[
            profile_column(str(c), features[c], max_sample=max_sample, seed=seed)
            for c in features.columns
        ],
        prediction=None
        if predictions is None
        else profile_column(PREDICTION, predictions, max_sample=max_sample, seed=seed),
        target=None
        if target is None
        else profile_column(
            TARGET,
            target.astype(float if task == "regression" else str),
            max_sample=max_sample,
            seed=seed,
        ),
        metrics=dict(metrics or {}),
        task=task,
    )
