"""Model artifacts: scikit-learn pipelines serialized with skops (never pickle), hash-verified.

Loading refuses any type outside skops' defaults plus an explicit allow-list, and refuses bytes
whose SHA-256 differs from the one the registry recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import skops.io as sio

from driftloop.shared.errors import ArtifactRejected

TRUSTED_TYPES = frozenset(
    {
        # SimpleImputer keeps a dtype; skops rebuilds it from an empty array, running no code.
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
"""Types beyond skops' defaults that driftloop's own estimators need."""


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
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # skops raises assorted errors on foreign bytes
        raise ArtifactRejected(f"artifact is not a readable skops file: {exc}") from exc
    refused = untrusted - TRUSTED_TYPES
    if refused:
        raise ArtifactRejected(f"artifact contains untrusted types: {sorted(refused)}")
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
        raise ArtifactRejected(f"artifact failed to load: {exc}") from exc


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Literal["numeric", "categorical"]


@dataclass(frozen=True)
class ModelSignature:
    """What a trained pipeline takes and gives: features in order, and its classes."""

    features: tuple[Feature, ...]
    classes: tuple[str, ...]


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
    return ModelSignature(tuple(Feature(c, kinds.get(c, "numeric")) for c in order), classes)
