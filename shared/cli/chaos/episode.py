"""Chaos fault for the loop's own idempotency: one drift episode delivered three times (a
re-delivery and a re-emission) with training killed mid-run, which must still train once."""

from __future__ import annotations

import time
import uuid

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.training.v1 import training_pb2
from driftloop.shared.bus import envelope, topics
from driftloop.shared.cli.chaos import events as chaos_events
from driftloop.shared.cli.chaos.steps import Chaos, Row, kill, recovered


def duplicated_episode(c: Chaos, row: Row) -> str:
    """DriftDetected for a new episode twice (same event: a re-delivery), training killed once
    its run is under way, then the episode again under a new event id (a monitor that
    re-emitted it after a restart). Returns the episode's run id."""
    h = c.h
    h.ingest(c.rows)
    h.wait_accounted(c.timeout)
    episode = f"chaos-{uuid.uuid4().hex[:12]}"
    row.info["episode_id"] = episode
    first = _drift_event(h.model, episode)
    chaos_events.publish(h.common.kafka_connection(), topics.DRIFT, h.model, [first, first])
    run = None
    deadline = time.monotonic() + c.timeout
    while run is None and time.monotonic() < deadline:
        run = _started_run(c, episode)
        time.sleep(0.005)  # poll: aim at the run while it is fitting
    if run is None:
        raise TimeoutError(f"no training run started for episode {episode}")
    row.info["phase_at_kill"] = f"{run.state}/{run.progress}"
    t = time.monotonic()
    pid = kill(c, "training", row)
    again = _drift_event(h.model, episode)
    chaos_events.publish(h.common.kafka_connection(), topics.DRIFT, h.model, [again])
    row.recovery_s = recovered(c, "training", pid, t)
    row.note = "episode sent 3 times (1 re-delivery, 1 new event id); training killed mid-run"
    return str(run.run_id)


def one_run_per_episode(c: Chaos, row: Row) -> None:
    """After the loop closed (so every copy was consumed by then): exactly one run."""
    runs = _episode_runs(c, str(row.info["episode_id"]))
    row.info["runs_for_episode"] = len(runs)
    row.checks["episode_trained_once"] = len(runs) == 1


def _drift_event(model: str, episode: str) -> bytes:
    drift = events_pb2.DriftDetected(model=model, episode_id=episode, drift_share=1.0, live_rows=1)
    return envelope.encode(envelope.new_event("chaos", drift))


def _started_run(c: Chaos, episode: str) -> training_pb2.Run | None:
    runs = _episode_runs(c, episode)
    return next((r for r in runs if r.state != "queued"), None)


def _episode_runs(c: Chaos, episode: str) -> list[training_pb2.Run]:
    reply = c.h.retry(
        lambda: c.h.training.ListRuns(training_pb2.ListRunsRequest(model=c.h.model), timeout=5)
    )
    return [r for r in reply.runs if r.episode_id == episode]
