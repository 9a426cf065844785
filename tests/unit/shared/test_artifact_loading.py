"""What `load_model` refuses: bytes that do not hash to the recorded sha256, bytes that are not
a skops file, and a pipeline holding a type outside skops' defaults and driftloop's list (a
skops file can name any importable callable)."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from driftloop.shared.artifacts import dump_model, load_model, sha256
from driftloop.shared.errors import ArtifactRejected

pytestmark = pytest.mark.unit


def _fitted(first_step: object) -> Pipeline:
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    return Pipeline([("f", first_step), ("m", LogisticRegression())]).fit(x, [0, 1, 1, 0])


def test_a_trusted_pipeline_loads_and_predicts_the_same() -> None:
    pipeline = _fitted(FunctionTransformer())
    data = dump_model(pipeline)
    loaded = load_model(data, sha256(data))
    x = np.array([[0.2, 0.9]])
    assert loaded.predict_proba(x).tolist() == pipeline.predict_proba(x).tolist()


def test_an_untrusted_type_is_refused_and_named() -> None:
    data = dump_model(_fitted(FunctionTransformer(operator.neg)))
    with pytest.raises(ArtifactRejected, match=r"untrusted types: \['_operator.neg'\]"):
        load_model(data, sha256(data))


def test_bytes_that_are_not_skops_are_refused() -> None:
    data = b"PK\x03\x04 not really a zip"
    with pytest.raises(ArtifactRejected, match="not a readable skops file"):
        load_model(data, sha256(data))


def test_a_hash_mismatch_is_refused_before_reading() -> None:
    data = dump_model(_fitted(FunctionTransformer()))
    with pytest.raises(ArtifactRejected, match="hash mismatch"):
        load_model(data, "0" * 64)
