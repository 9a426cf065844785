"""A regression model through the registry's gRPC API: a YAML spec with `task: regression`, then
candidates with regression metrics and a paired comparison (shared.paired.compare) sent as
training sends them, promoted, rejected or inconclusive on a lower-is-better policy."""

from __future__ import annotations

import numpy as np
import pytest
from registry_harness import registry_server

from driftloop.protos.registry.v1 import registry_pb2 as pb
from driftloop.shared.paired import PairedComparison, compare, rows_needed
from driftloop.shared.registry_pb import comparison_to_pb
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration
SHA = "cd" * 32
SPEC = """
task: regression
estimator: ridge
params: {alpha: 0.5}
policy: {margin: 0.02}
"""


def regressors(n: int, candidate_sd: float, champion_sd: float) -> PairedComparison:
    """Two regressors of the same rows with correlated errors, compared on MAE."""
    rng = np.random.default_rng(7)
    y, z, w = rng.normal(300, 50, n), rng.normal(0, 1, n), rng.normal(0, 1, n)
    champion = y + champion_sd * z
    return compare(y, y + candidate_sd * (0.8 * z + 0.6 * w), champion, "mae")


def register(
    run_id: str, mae: float, champion: str = "", c: PairedComparison | None = None
) -> pb.RegisterVersionRequest:
    metrics = {"mae": mae, "rmse": 1.25 * mae, "r2": 0.9}
    return pb.RegisterVersionRequest(
        model="prices",
        run_id=run_id,
        artifact_uri=f"artifacts/prices/{run_id}/model.skops",
        artifact_sha256=SHA,
        metrics=metrics,
        champion_metrics={"mae": c.champion, "rmse": 1.25 * c.champion} if c else {},
        champion_version=champion,
        lineage=pb.Lineage(run_id=run_id, correlation_id=f"corr-{run_id}", trigger="drift"),
        correlation_id=f"corr-{run_id}",
        comparison=comparison_to_pb(c),
    )


async def test_a_regression_model_is_promoted_and_rejected_on_its_error(
    common: CommonSettings,
) -> None:
    async with registry_server(common) as stub:
        await stub.CreateModel(
            pb.CreateModelRequest(name="prices", dataset="houses", target="price")
        )
        spec = (await stub.SetSpec(pb.SetSpecRequest(model="prices", spec_yaml=SPEC))).spec
        assert (spec.task, spec.estimator, spec.policy.metric) == ("regression", "ridge", "mae")
        assert spec.policy.floor == 0.0 and spec.policy.min_improvement == pytest.approx(0.05)

        first = await stub.RegisterVersion(register("run-1", 20.0))
        assert first.promoted and first.decision_reason == "no champion; mae 20.000, no ceiling set"

        better = regressors(3000, 9.0, 10.0)  # about 10% less absolute error
        second = await stub.RegisterVersion(register("run-2", better.candidate, "1", better))
        assert second.promoted and second.outcome == "promoted"
        assert "margin 0.020 (relative error reduction)" in second.decision_reason

        worse = regressors(3000, 11.0, 10.0)
        third = await stub.RegisterVersion(register("run-3", worse.candidate, "2", worse))
        assert not third.promoted and third.outcome == "rejected"
        assert "not better by 0.050 (relative error reduction)" in third.decision_reason

        small = regressors(80, 9.5, 10.0)
        fourth = await stub.RegisterVersion(register("run-4", small.candidate, "2", small))
        assert fourth.outcome == "inconclusive" and not fourth.promoted
        # the spread travelled with the comparison: the rows needed are computed from it
        assert fourth.rows_needed == rows_needed(
            0.05, 0.02, confidence=small.confidence, spread=small.spread
        )
        assert fourth.rows_needed != rows_needed(0.05, 0.02, spread=0.8)

        production = await stub.GetProduction(pb.GetProductionRequest(model="prices"))
        assert production.version == "2"
        history = await stub.GetHistory(pb.GetHistoryRequest(model="prices"))
        # no live evidence for a regressor: no probation guard after the promotion
        assert not [a for a in history.aliases if a.action == "probation"]
