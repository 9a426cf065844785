"""Model artifacts: scikit-learn pipelines serialized with skops (never pickle), hash-verified.

Loading refuses any type outside skops' defaults plus an explicit allow-list, and refuses bytes
whose SHA-256 differs from the one the registry recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import skops.io as sio
from sklearn.base import is_regressor
from skops.io.exceptions import UntrustedTypesFoundException

from driftloop.shared.errors import ArtifactRejected

TRUSTED_TYPES = frozenset(
    {
        # SimpleImputer keeps a dtype; skops rebuilds it from an empty array, running no code.
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # scikit-learn's own internals of allow-listed estimators (driftloop.shared.estimators
        # .allowed) with their default parameters: neighbour trees and distances, kernels,
        # optimisers, losses. Training checks every artifact loads before registering it, so a
        # parameter that brings another type fails the run, naming it, never a deploy.
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.gaussian_process.kernels.Product",
        "sklearn.gaussian_process.kernels.Sum",
        "sklearn.gaussian_process.kernels.ConstantKernel",
        "sklearn.gaussian_process.kernels.RBF",
        "sklearn.gaussian_process.kernels.WhiteKernel",
        "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn._loss.loss.HalfTweedieLossIdentity",
    }
)
"""Types beyond skops' defaults that driftloop's estimators need."""
_TRUSTED_LIST = sorted(TRUSTED_TYPES)


def dump_model(pipeline: Any) -> bytes:
    return sio.dumps(pipeline)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_model(data: bytes, expected_sha256: str) -> Any:
    """Load a pipeline after checking its hash and that every type in it is trusted."""
    actual = sha256(data)
    if actual != expected_sha256:
        raise ArtifactRejected(
            f"artifact hash mismatch: registry recorded {expected_sha256}, bytes hash to {actual}"
        )
    # why one read: skops refuses any type outside `trusted` and its own defaults while it
    # loads, so listing the types first (a second full read of the file) is needed only to
    # name them once it refused
    try:
        return sio.loads(data, trusted=_TRUSTED_LIST)
    except UntrustedTypesFoundException:
        refused = sorted(set(sio.get_untrusted_types(data=data)) - TRUSTED_TYPES)
        raise ArtifactRejected(f"artifact contains untrusted types: {refused}") from None
    except Exception as exc:  # skops raises assorted errors on foreign bytes
        raise ArtifactRejected(f"artifact is not a readable skops file: {exc}") from exc


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Literal["numeric", "categorical"]


@dataclass(frozen=True)
class ModelSignature:
    """What a trained pipeline takes and gives: features in order, and its classes (none for
    a regressor, which predicts one number per row)."""

    features: tuple[Feature, ...]
    classes: tuple[str, ...]
    task: Literal["classification", "regression"] = "classification"


def signature(pipeline: Any) -> ModelSignature:
    """Read the signature off a pipeline built by training: Pipeline([("prep",
    ColumnTransformer([("num", ..., cols), ("cat", ..., cols)])), ("model", estimator)])."""
    prep = pipeline.named_steps["prep"]
    kinds: dict[str, Literal["numeric", "categorical"]] = {}
    for name, _, cols in prep.transformers_:
        if name in ("num", "cat"):
            for col in cols:
                kinds[str(col)] = "numeric" if name == "num" else "categorical"
    order = [str(c) for c in pipeline.feature_names_in_]
    classes = tuple(str(c) for c in getattr(pipeline, "classes_", ()))
    task: Literal["classification", "regression"] = (
        "regression" if is_regressor(pipeline) else "classification"
    )
    return ModelSignature(tuple(Feature(c, kinds.get(c, "numeric")) for c in order), classes, task)
