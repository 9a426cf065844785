"""The loop benchmark's arithmetic: per-episode timings from events and the run, the overhead
(sample accumulation and fitting taken out), and median/p90 over episodes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.training.v1 import training_pb2
from driftloop.shared.bus import envelope
from driftloop.shared.cli.bench.loop import measure, summarise
from driftloop.shared.cli.bench.loop_driver import Episode

pytestmark = pytest.mark.unit
T0 = 1_800_000_000.0


def stamp(message: object, field: str, offset: float) -> None:
    getattr(message, field).FromNanoseconds(int((T0 + offset) * 1e9))


def chain() -> tuple[list[envelope.Envelope], training_pb2.Run]:
    drift = events_pb2.DriftDetected(model="m", version="1", episode_id="e")
    stamp(drift, "window_end", 0.7)
    detected = envelope.new_event("monitoring", drift)
    stamp(detected, "occurred_at", 1.0)
    promoted = envelope.new_event(
        "registry", events_pb2.ModelPromoted(model="m", version="2"), cause=detected
    )
    stamp(promoted, "occurred_at", 4.0)
    deployed = envelope.new_event(
        "serving", events_pb2.ModelDeployed(model="m", version="2"), cause=promoted
    )
    stamp(deployed, "occurred_at", 4.2)
    run = training_pb2.Run(
        correlation_id=detected.correlation_id, data_wait_seconds=2.0, fit_seconds=0.3
    )
    stamp(run, "started_at", 1.2)
    return [detected, promoted, deployed], run


def test_episode_timings_and_overhead() -> None:
    events, run = chain()
    ep = Episode(0, 2.0, T0, "1", "2", serving_at=T0 + 4.3)
    row = measure(ep, events, [run])
    assert row["closed"] and row["version"] == "2"
    assert (row["detect_s"], row["window_fill_s"], row["train_start_s"]) == (1.0, 0.7, 1.2)
    assert (row["promote_s"], row["deployed_s"], row["serving_s"]) == (4.0, 4.2, 4.3)
    assert row["overhead_s"] == pytest.approx(4.3 - 0.7 - 2.0 - 0.3, abs=1e-3)


def test_an_episode_that_never_answered_is_open() -> None:
    events, run = chain()
    assert measure(Episode(1, 0.0, T0, "2"), events, [run])["closed"] is False
    later = Episode(1, 0.0, T0 + 100, "2", "3", serving_at=T0 + 104)
    assert measure(later, events, [run])["closed"] is False  # that drift came before it


def test_median_and_p90_over_closed_episodes() -> None:
    rows = [{"closed": True, "serving_s": float(v), "overhead_s": 1.0} for v in range(1, 11)]
    rows.append({"closed": False})
    s = summarise(rows)
    assert s["median_serving_s"] == 5.5 and s["p90_serving_s"] == 9.0
    assert s["median_overhead_s"] == 1.0 and s["median_fit_s"] is None
    assert SimpleNamespace(**s).p90_overhead_s == 1.0
