"""Assemble one causal chain (drift -> run -> version -> decision -> deployment) from what the
registry, training and the event topics know; pure: no gRPC or Kafka here, only their records."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.training.v1 import training_pb2
from driftloop.shared.registry_types import History, ModelVersion
from driftloop.shared.timestamps import seconds_or_none

GONE = "event no longer on the bus"


@dataclass
class Step:
    step: str
    at: float | None
    detail: str = ""
    source: str = ""
    seconds: float | None = None
    """Seconds since the previous timed step."""
    since_start: float | None = None


@dataclass
class Sources:
    """Everything found for one correlation id."""

    correlation_id: str
    runs: list[training_pb2.Run] = field(default_factory=list)
    versions: list[ModelVersion] = field(default_factory=list)
    history: dict[str, History] = field(default_factory=dict)
    events: list[events_pb2.Envelope] = field(default_factory=list)
    bus_read: bool = True


def iso(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _events(src: Sources, kind: str) -> list[events_pb2.Envelope]:
    return [e for e in src.events if e.type == kind]


def _drift_steps(src: Sources) -> list[Step]:
    found = [e for e in _events(src, "DriftDetected") if e.event_id == src.correlation_id]
    found = found or _events(src, "DriftDetected")
    if found:
        e = found[0]
        d = e.drift_detected
        hits = [f"{f.feature} {f.test} p={f.p_value:.1e}" for f in d.features if f.drifted]
        return [
            Step(
                "drift detected",
                seconds_or_none(e.occurred_at),
                f"model {d.model} v{d.version}, episode {d.episode_id}: {', '.join(hits)}; "
                f"share {d.drift_share:.2f}, {d.live_rows} live rows",
                "driftloop.drift",
            )
        ]
    drift_runs = [r for r in src.runs if r.trigger == "drift"]
    if drift_runs:
        r = drift_runs[0]
        source = "training run" + (f" ({GONE})" if src.bus_read else "")
        return [
            Step(
                "drift detected",
                seconds_or_none(r.caused_at),
                f"episode {r.episode_id}: {r.cause_detail}",
                source,
            )
        ]
    return []


def _run_steps(run: training_pb2.Run) -> list[Step]:
    attempt = f" (attempt {run.attempt})" if run.attempt > 1 else ""
    cause = (
        f"{run.trigger} run {run.run_id}{attempt}"
        + (f" ({run.reason})" if run.reason else "")
        + (f"; waits for {run.wait_reason}" if run.wait_reason else "")
    )
    steps = [Step("training run queued", seconds_or_none(run.created_at), cause, "training")]
    started = seconds_or_none(run.started_at)
    if started is None:
        return steps
    waited = seconds_or_none(run.created_at)
    queued = f"after {started - waited:.2f}s in the queue" if waited is not None else ""
    steps.append(Step("training started", started, queued, "training"))
    if run.data_wait_seconds:
        steps.append(
            Step(
                "post-drift data ready",
                started + run.data_wait_seconds,
                f"waited {run.data_wait_seconds:.2f}s for rows after the drift "
                f"(manifest v{run.manifest_version})",
                "training",
            )
        )
    finished = seconds_or_none(run.finished_at)
    if finished is not None:
        detail = (
            f"fit {run.fit_seconds:.2f}s on {run.training_rows} rows"
            + (f" with spec v{run.spec_version}" if run.spec_version else "")
            + (f"; search chose {_params(run.best_params)}" if run.best_params else "")
            + (f"; registry: {run.outcome}" if run.outcome else "")
            if run.state == "succeeded"
            else f"{run.state}: {run.error}"
        )
        steps.append(Step(f"training {run.state}", finished, detail, "training"))
    elif run.progress:
        steps.append(Step("training in progress", None, run.progress, "training"))
    return steps


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())) or "none"


def _params(values: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dict(values).items()))


def _slices(details: dict[str, Any]) -> str:
    found = details.get("slice_metrics") or []
    if not found:
        return ""
    columns = sorted({s["column"] for s in found})
    return f"; {len(found)} slices of {', '.join(columns)} scored"


def _comparison(details: dict[str, Any]) -> str:
    """The paired comparison the decision rested on, in one clause."""
    c = details.get("comparison")
    if not c:
        return ""
    level = round(100 * (2 * c["confidence"] - 1))
    needed = details.get("rows_needed") or 0
    return (
        f"; paired on {c['rows']} rows: {c['difference']:+.3f}, {level}% interval "
        f"[{c['lower']:+.3f}, {c['upper']:+.3f}], p={c['p_value']:.3g} ({c['method']})"
        + (f"; {details.get('outcome')}" if details.get("outcome") else "")
        + (f", needs about {needed} rows" if needed else "")
    )


def _version_steps(v: ModelVersion, history: History) -> list[Step]:
    steps = []
    for record in history.audit:
        details = json.loads(record.details_json or "{}")
        at = record.at
        if record.action == "register":
            champ = details.get("champion_version") or "none"
            steps.append(
                Step(
                    f"version {v.version} registered",
                    at,
                    f"candidate {_metrics(details.get('metrics', {}))} vs champion v{champ} "
                    f"{_metrics(details.get('champion_metrics', {}))} on the same rows"
                    + _comparison(details)
                    + _slices(details),
                    "registry",
                )
            )
        else:
            who = details.get("actor", "")
            label = {
                "promote": "promoted",
                "approve": "approved and promoted",
                "reject": "rejected",
                "await_approval": "waiting for approval",
                "rollback": "rolled back to",
                "shadow": "runs as a shadow",
                "shadow_evidence": "live evidence",
                "shadow_replaced": "replaced as the shadow",
                "attention": "needs a human",
                "probation_ended": "kept after probation",
            }.get(record.action, record.action)
            steps.append(
                Step(
                    f"version {v.version} {label}",
                    at,
                    record.reason + (f" (by {who})" if who else ""),
                    "registry audit",
                )
            )
    for alias in history.aliases:
        if alias.alias not in ("", "production"):
            continue  # the shadow alias's moves are in the audit records
        if alias.previous_version == v.version:  # production later moved away from it
            steps.append(
                Step(
                    f"production moved to v{alias.version}",
                    alias.at,
                    f"{alias.action or 'move'} by {alias.actor}: {alias.reason}",
                    "registry alias history",
                )
            )
    return steps


def _pending_steps(src: Sources) -> list[Step]:
    """ModelPendingApproval events: the registry asked operators for a decision."""
    return [
        Step(
            f"version {e.model_pending_approval.version} approval requested",
            seconds_or_none(e.occurred_at),
            f"ModelPendingApproval published for operators: {e.model_pending_approval.reason}",
            "driftloop.models",
        )
        for e in _events(src, "ModelPendingApproval")
    ]


def _deployment_steps(src: Sources) -> list[Step]:
    steps = []
    for e in _events(src, "ModelDeployed"):
        d = e.model_deployed
        steps.append(
            Step(
                f"version {d.version} deployed",
                seconds_or_none(e.occurred_at),
                f"serving {d.instance} answers with v{d.version} "
                f"(was v{d.previous_version or '-'}); load {d.load_seconds:.2f}s",
                "driftloop.deployments",
            )
        )
    for e in _events(src, "DeploymentFailed"):
        f = e.deployment_failed
        steps.append(
            Step(
                f"version {f.version} deployment failed",
                seconds_or_none(e.occurred_at),
                f.error,
                "driftloop.deployments",
            )
        )
    promoted = [v for v in src.versions if any(_promoted(src.history.get(v.version)))]
    if not steps and promoted:
        detail = GONE if src.bus_read else "the broker could not be read"
        steps.append(Step("deployment", None, detail, "driftloop.deployments"))
    return steps


def _promoted(history: History | None) -> list[str]:
    if history is None:
        return []
    return [r.action for r in history.audit if r.action in ("promote", "approve")]


def _operator_steps(src: Sources) -> list[Step]:
    """Promotions with no version in this chain (an operator's rollback starts its own chain)."""
    if src.versions:
        return []
    return [
        Step(
            f"version {e.model_promoted.version} {e.model_promoted.action}",
            seconds_or_none(e.occurred_at),
            e.model_promoted.reason,
            "driftloop.models",
        )
        for e in _events(src, "ModelPromoted")
    ]


def build_chain(src: Sources) -> dict[str, Any]:
    steps = _drift_steps(src)
    for run in sorted(src.runs, key=lambda r: r.created_at.ToNanoseconds()):
        steps += _run_steps(run)
    for v in sorted(src.versions, key=lambda v: int(v.version)):
        steps += _version_steps(v, src.history.get(v.version, History()))
    steps += _operator_steps(src)
    steps += _pending_steps(src)
    steps += _deployment_steps(src)
    timed = sorted((s for s in steps if s.at is not None), key=lambda s: s.at or 0.0)
    untimed = [s for s in steps if s.at is None]
    previous = start = timed[0].at if timed else None
    for s in timed:
        assert s.at is not None and previous is not None and start is not None
        s.seconds, s.since_start = round(s.at - previous, 3), round(s.at - start, 3)
        previous = s.at
    ordered = timed + untimed
    names = " | ".join(s.step for s in ordered)
    have = {
        "cause": bool(src.runs and src.runs[0].trigger != "drift") or "drift detected" in names,
        "run": bool(src.runs),
        "version": bool(src.versions),
        "decision": any(
            w in names
            for w in (
                "promoted",
                "rejected",
                "waiting for approval",
                "rolled back",
                "runs as a shadow",
            )
        ),
        "deployment": " deployed" in names or "deployment failed" in names,
    }
    first = src.versions[0] if src.versions else None
    return {
        "correlation_id": src.correlation_id,
        "model": first.model if first else (src.runs[0].model if src.runs else ""),
        "version": first.version if first else "",
        "complete": all(have.values()),
        "missing": [k for k, ok in have.items() if not ok],
        "bus_read": src.bus_read,
        "steps": [{**asdict(s), "at_iso": iso(s.at)} for s in ordered],
    }
