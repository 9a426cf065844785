"""Cold loads of partition models at fleet scale: a model evicted and loaded again does not redo
what its first load learned. Its numeric form is checked against scikit-learn once per artifact
(sha256), a compilation that failed for it is never retried (nor, after UNCONVERTIBLE_AFTER
artifacts, for its pipeline shape), a compiled form that agreed is rebuilt without re-checking,
and its bytes come back from the compressed artifact cache instead of the object store, hash
checked again. Real pipelines (histogram gradient boosting, which skl2onnx 1.20 cannot convert,
and ridge, which it can), real loads, a fake registry and an in-memory store."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import FLEET, FleetModels, FleetServing, artifact_key, make_regressor

from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as pb
from driftloop.services.serving.adapters import pb as converters
from driftloop.services.serving.core import compiled_form, form_memo, metrics, numeric_form
from driftloop.services.serving.core.artifact_cache import ArtifactCache
from driftloop.services.serving.core.compiled_form import CompiledForm
from driftloop.services.serving.core.form_memo import Checked, FormMemo
from driftloop.shared import artifacts
from driftloop.shared.artifacts import signature

pytestmark = pytest.mark.unit

FEATURES = ["x1", "x2"]
ROUTES = (1, 2, 3, 4, 5)
PART = {r: f"{FLEET}/route_id={r}" for r in ROUTES}
BOOSTED = {r: make_regressor(seed=r, features=FEATURES) for r in ROUTES}
RIDGE = {r: make_regressor(seed=r, estimator="ridge", features=FEATURES) for r in ROUTES}


def fleet(pipelines: dict[int, Any]) -> FleetModels:
    models = FleetModels()
    models.add(FLEET, "1", make_regressor(seed=99, estimator="ridge", features=FEATURES))
    for route, pipeline in pipelines.items():
        models.add(PART[route], "1", pipeline)
    return models


def request(route: int) -> Any:
    req = pb.ModelInferRequest(model_name=FLEET, id=f"r{route}")
    req.inputs.add(name="route_id", datatype="INT64", shape=[1]).contents.int64_contents.append(
        route
    )
    req.inputs.add(name="x1", datatype="FP64", shape=[1]).contents.fp64_contents.append(0.5)
    req.inputs.add(name="x2", datatype="FP64", shape=[1]).contents.fp64_contents.append(-1.0)
    return converters.to_inference_request(req)


async def answer(s: FleetServing, route: int) -> float:
    result = await s.service.infer_async(request(route))
    return float(result.outputs[0].data[0])


def predicted(pipeline: Any) -> float:
    return float(pipeline.predict(pd.DataFrame({"x1": [0.5], "x2": [-1.0]}))[0])


def fetched(s: FleetServing, route: int) -> int:
    """Fetches of the route's artifacts (not its profile: a first load reads it for the
    compiled form's check)."""
    return sum(
        1
        for key in s.models.store.fetched
        if key.startswith(f"artifacts/{PART[route]}/") and key.endswith("/model.skops")
    )


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of module.name (the real function still runs)."""
    calls: list[int] = []
    real: Callable[..., Any] = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


async def serving(models: FleetModels, *, cache_bytes: int = 0) -> FleetServing:
    """Serving with compiled forms on and room for one partition model: asking for another
    evicts it, so every switch is a cold load."""
    s = FleetServing(models, budget_bytes=1, compiled=True)
    if cache_bytes:
        s.deployer.artifacts = ArtifactCache(cache_bytes)
    return await s.start()


async def test_an_evicted_model_loaded_again_is_not_compiled_or_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiles = counting(monkeypatch, compiled_form, "_session")
    checks = counting(monkeypatch, numeric_form, "agrees")
    s = await serving(fleet({1: BOOSTED[1], 2: BOOSTED[2]}))
    compiles.clear()
    checks.clear()  # the global model's
    for route in (1, 2, 1, 2, 1):
        assert await answer(s, route) == pytest.approx(predicted(BOOSTED[route]))
    assert fetched(s, 1) == 3 and fetched(s, 2) == 2  # evicted and loaded again each time
    assert len(compiles) == 2 and len(checks) == 2  # once per artifact, on its first load
    loaded = s.slot.get(PART[1])
    assert isinstance(loaded.numeric, numeric_form.StepChain)  # served without pandas still
    sha = artifacts.sha256(s.models.store.objects[artifact_key(PART[1], "1")])
    assert s.deployer.forms.get(sha) == Checked(numeric=True, compiled="unconvertible")


async def test_a_new_version_of_a_model_is_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = counting(monkeypatch, numeric_form, "agrees")
    models = fleet({1: BOOSTED[1]})
    s = await serving(models)
    await answer(s, 1)
    before = len(checks)
    models.add(PART[1], "2", BOOSTED[3])
    await s.reconciler.reconcile_once()
    assert await answer(s, 1) == pytest.approx(predicted(BOOSTED[3]))
    assert len(checks) == before + 1


async def test_a_pipeline_shape_that_never_converts_is_given_up_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiles = counting(monkeypatch, compiled_form, "_session")
    s = await serving(fleet(BOOSTED))
    compiles.clear()
    for route in ROUTES:
        assert await answer(s, route) == pytest.approx(predicted(BOOSTED[route]))
    # three different artifacts failed the same way: the other two are not tried at all
    assert len(compiles) == form_memo.UNCONVERTIBLE_AFTER < len(ROUTES)
    # the last one still serves through its checked numeric form
    assert isinstance(s.slot.get(PART[ROUTES[-1]]).numeric, numeric_form.StepChain)


async def test_a_compiled_form_that_agreed_is_rebuilt_on_reload_without_its_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiles = counting(monkeypatch, compiled_form, "_session")
    samples = counting(monkeypatch, compiled_form, "realistic_sample")
    s = await serving(fleet({1: RIDGE[1], 2: RIDGE[2]}))
    compiles.clear()
    samples.clear()
    for route in (1, 2, 1):
        assert await answer(s, route) == pytest.approx(predicted(RIDGE[route]))
    assert isinstance(s.slot.get(PART[1]).numeric, CompiledForm)  # the session is rebuilt...
    assert len(compiles) == 3 and len(samples) == 2  # ...but checked once per artifact


def test_a_form_that_disagreed_is_not_derived_again_for_the_same_artifact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = RIDGE[1]
    sig = signature(pipeline)
    memo = FormMemo()
    monkeypatch.setattr(numeric_form, "agrees", lambda *a: (False, 1.0))
    assert numeric_form.derive(pipeline, sig, memo=memo, sha256="a" * 64) is None
    monkeypatch.setattr(numeric_form, "agrees", lambda *a: pytest.fail("checked again"))
    assert numeric_form.derive(pipeline, sig, memo=memo, sha256="a" * 64) is None
    assert memo.get("a" * 64) == Checked(numeric=False)


def test_the_memo_forgets_the_least_recently_used_beyond_its_size() -> None:
    memo = FormMemo(max_versions=2)
    for sha in "abc":
        memo.put(sha, Checked(numeric=True))
    assert memo.get("a") is None and len(memo) == 2
    memo.get("b")
    memo.put("d", Checked(numeric=False))
    assert memo.get("c") is None and memo.get("b") is not None


def test_a_shape_that_converted_once_is_never_given_up_on() -> None:
    memo, kind = FormMemo(), ("sklearn.pipeline.Pipeline",)
    memo.compiled(kind, "a", "disagrees")  # a graph was built: the shape converts
    for sha in "bcde":
        memo.compiled(kind, sha, "unconvertible")
    assert memo.compiles(kind)
    other = ("other",)
    for sha in "abc":
        memo.compiled(other, sha, "unconvertible")
    assert not memo.compiles(other)


async def test_an_evicted_model_reloads_from_the_artifact_cache_not_the_store() -> None:
    models = fleet({1: BOOSTED[1], 2: BOOSTED[2]})
    s = await serving(models, cache_bytes=2**20)
    hits = metrics.ARTIFACT_CACHE_HITS._value.get()
    for route in (1, 2, 1, 2, 1):
        assert await answer(s, route) == pytest.approx(predicted(BOOSTED[route]))
    assert fetched(s, 1) == 1 and fetched(s, 2) == 1
    assert metrics.ARTIFACT_CACHE_HITS._value.get() == hits + 3
    blob = models.store.objects[artifact_key(PART[1], "1")]
    assert s.deployer.artifacts is not None
    assert s.deployer.artifacts.cached_bytes < len(blob)  # two compressed < one raw
    # the global model is no partition: loaded once at start, never kept here
    assert artifacts.sha256(models.store.objects[artifact_key(FLEET, "1")]) not in (
        s.deployer.artifacts
    )


async def test_cached_bytes_that_fail_the_hash_check_are_fetched_from_the_store() -> None:
    models = fleet({1: BOOSTED[1], 2: BOOSTED[2]})
    s = await serving(models, cache_bytes=2**20)
    await answer(s, 1)
    await answer(s, 2)  # route 1 evicted, its bytes kept
    cache = s.deployer.artifacts
    assert cache is not None
    sha = artifacts.sha256(models.store.objects[artifact_key(PART[1], "1")])
    other = models.store.objects[artifact_key(PART[2], "1")]
    cache._blobs[sha] = (zlib.compress(other), len(other))  # not the bytes of that hash
    assert await answer(s, 1) == pytest.approx(predicted(BOOSTED[1]))
    assert fetched(s, 1) == 2 and (PART[1], "1") not in s.deployer.rejected


def test_the_artifact_cache_keeps_compressed_bytes_within_its_budget() -> None:
    blobs = {r: artifacts.dump_model(BOOSTED[r]) for r in (1, 2, 3)}
    packed = {r: len(zlib.compress(b, 1)) for r, b in blobs.items()}
    assert max(packed.values()) * 4 < min(len(b) for b in blobs.values())
    cache = ArtifactCache(packed[1] + packed[2] + packed[3] - 1)
    for r, blob in blobs.items():
        cache.put(f"sha{r}", blob)
    assert "sha1" not in cache and cache.get("sha2") == blobs[2]
    assert cache.cached_bytes == packed[2] + packed[3] <= cache.budget_bytes
    cache.put("sha1", blobs[1])  # sha3 is now the least recently used
    assert "sha3" not in cache and cache.get("sha1") == blobs[1]
    off = ArtifactCache(0)
    off.put("sha1", blobs[1])
    assert off.get("sha1") is None
    small = ArtifactCache(10)  # a blob alone over budget is not kept (nor evicts the others)
    small.put("sha1", blobs[1])
    assert small.cached_bytes == 0


def test_a_regressor_served_from_its_remembered_checks_answers_like_the_pipeline() -> None:
    pipeline = BOOSTED[4]
    sig = signature(pipeline)
    memo = FormMemo()
    first = numeric_form.derive(pipeline, sig, compiled=True, memo=memo, sha256="b" * 64)
    again = numeric_form.derive(pipeline, sig, compiled=True, memo=memo, sha256="b" * 64)
    rows = numeric_form.check_sample(sig)
    expected = pipeline.predict(pd.DataFrame(rows, columns=FEATURES))
    for form in (first, again):
        np.testing.assert_allclose(form.predict(rows), expected, rtol=1e-12)
