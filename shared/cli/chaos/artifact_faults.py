"""Chaos faults about artifacts: a version whose stored bytes were changed after registration,
and one that loads but cannot predict; serving must refuse each before it answers a request."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from driftloop.protos.registry.v1 import registry_pb2 as rpb
from driftloop.shared import artifacts
from driftloop.shared.bus import topics
from driftloop.shared.cli.chaos import events as chaos_events
from driftloop.shared.cli.chaos.steps import Chaos, Row
from driftloop.shared.run_record import RunRecord, run_record_key


def tampered_artifact(c: Chaos, row: Row) -> None:
    """Bytes changed after the registry recorded (and itself computed) their hash: refused by
    serving before loading."""
    h = c.h
    c.h.ingest(c.rows)
    current = _production_version(c)
    data = h.store.get(current.artifact_uri)
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    _refused_artifact(c, row, data, "hash mismatch", tamper=bytes(tampered))


def warmup_failure(c: Chaos, row: Row) -> None:
    """A well-formed artifact with the right hash that loads but cannot predict: refused at
    the warm-up prediction, before any request could reach it."""
    h = c.h
    c.h.ingest(c.rows)
    current = _production_version(c)
    pipeline = artifacts.load_model(h.store.get(current.artifact_uri), current.artifact_sha256)
    estimator = pipeline.steps[-1][1]
    if not hasattr(estimator, "coef_"):
        raise RuntimeError("the warm-up fault needs a linear model (one with coef_)")
    estimator.coef_ = np.zeros((estimator.coef_.shape[0], estimator.coef_.shape[1] + 3))
    data = artifacts.dump_model(pipeline)
    _refused_artifact(c, row, data, "warm-up")


def _production_version(c: Chaos) -> Any:
    h = c.h
    production = h.production()
    return h.retry(
        lambda: h.registry.GetVersion(rpb.GetVersionRequest(model=h.model, version=production))
    )


def _refused_artifact(
    c: Chaos, row: Row, data: bytes, expect: str, *, tamper: bytes | None = None
) -> None:
    """Register `data` as a run's candidate (with its run record: the registry checks both),
    replace the stored bytes by `tamper` if given, promote it by hand; serving must refuse it
    with an error mentioning `expect`, keep answering with production, and the registry roll
    back."""
    h = c.h
    production = h.production()
    current = _production_version(c)
    run_id = f"refused-{uuid.uuid4().hex[:8]}"
    key = f"artifacts/{h.model}/{run_id}/model.skops"
    profile = f"artifacts/{h.model}/{run_id}/profile.json"
    h.store.put(key, data)
    h.store.put(profile, h.store.get(current.profile_uri))
    # worse than the champion on purpose: the policy rejects it, the operator promotes it
    metrics, champion = {"accuracy": 0.0}, {"accuracy": 1.0}
    record = RunRecord(run_id, metrics, champion, production)
    h.store.put(run_record_key(h.model, run_id), record.to_json())
    since = time.time()
    reply = h.retry(
        lambda: h.registry.RegisterVersion(
            rpb.RegisterVersionRequest(
                model=h.model,
                run_id=run_id,
                artifact_uri=key,
                artifact_sha256=artifacts.sha256(data),
                profile_uri=profile,
                metrics=metrics,
                champion_metrics=champion,
                champion_version=production,
            ),
            metadata=h.meta,
            timeout=10,
        )
    )
    bad = reply.version.version
    if tamper is not None:
        h.store.put(key, tamper)  # after the registry hashed what it was given
    h.retry(
        lambda: h.registry.Promote(
            rpb.DecisionRequest(model=h.model, version=bad, reason=f"chaos: {expect}"),
            metadata=h.meta,
            timeout=10,
        )
    )
    row.injected = True
    failed = chaos_events.find(
        h.common.kafka_connection(),
        topics.DEPLOYMENTS,
        lambda e: e.type == "DeploymentFailed" and e.deployment_failed.version == bad,
        since=since,
        timeout=60,
    )
    row.checks["deployment_failed_recorded"] = failed is not None
    row.checks["refused_for_the_right_reason"] = (
        failed is not None and expect in failed.deployment_failed.error
    )
    row.checks["serving_kept_current_model"] = h.served_version() == production
    h.retry(
        lambda: h.registry.Rollback(
            rpb.DecisionRequest(model=h.model, reason="chaos: artifact refused by serving"),
            metadata=h.meta,
            timeout=10,
        )
    )
    row.checks["registry_rolled_back"] = h.production() == production
    row.info["refused_version"] = bad
    row.recovery_s = round(time.time() - since, 2)
