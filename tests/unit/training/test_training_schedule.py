"""The schedule trigger: one run per epoch-aligned slot, only with new curated data, nothing
while a run is active, and the same decision from a fresh process on the same run table."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_fake import FakeRegistry

from driftloop.services.training.adapters.registry import TrainingRegistry
from driftloop.services.training.core.domain import ModelInfo, ModelSpec, Registration, Run
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.schedule import Scheduler, next_due, slot_key, slot_of
from driftloop.services.training.core.training import Training
from driftloop.shared import registry_types as reg

pytestmark = pytest.mark.unit
HOUR = 3600


def registry(*schedules: tuple[str, int]) -> TrainingRegistry:
    """Training's registry port over the fake: models on dataset "d", scheduled every N s."""
    fake = FakeRegistry()
    for name, every in schedules:
        fake.put_model(reg.Model(name, "d", "y", reg.TrainingSpec(schedule_seconds=every)))
    return TrainingRegistry(fake)  # type: ignore[arg-type]


class NoExecutor:
    async def execute(self, run: Run) -> None:
        raise AssertionError("the scheduler only queues")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def model(name: str, every: int) -> ModelInfo:
    return ModelInfo(name, "d", "y", ModelSpec(schedule_seconds=every))


def scheduler(
    path: Path, registry: TrainingRegistry, head: dict[str, int], clock: Clock
) -> Scheduler:
    runs = RunStore(path)
    training = Training(runs, registry, NoExecutor())
    return Scheduler(training, runs, registry, lambda d: head.get(d, 0), clock=clock)


def finish(runs: RunStore, run: Run, manifest_version: int) -> None:
    runs.claim_next()
    runs.record_data(run.run_id, manifest_version, 100)
    runs.succeed(run.run_id, Registration("1", True, "ok"), 0.1)


def test_slots_are_epoch_aligned() -> None:
    assert slot_of(6 * HOUR - 1, 6 * HOUR) == 0 and slot_of(6 * HOUR, 6 * HOUR) == 1
    assert slot_key("m", 60, 7) == "m@60s:7"
    assert next_due(90.0, 60, current_slot_done=True) == 120.0
    assert next_due(90.0, 60, current_slot_done=False) == 90.0


async def test_one_run_per_slot_only_with_new_data(tmp_path: Path) -> None:
    head = {"d": 3}
    clock = Clock(10 * HOUR + 5)
    sched = scheduler(tmp_path / "t.db", registry(("m", HOUR), ("off", 0)), head, clock)
    runs = sched._runs
    (first,) = await sched.tick()
    assert (first.model, first.trigger, first.schedule_slot) == ("m", "schedule", "m@3600s:10")
    assert "manifest v3" in first.reason
    assert await sched.tick() == []  # queued: nothing more
    finish(runs, first, manifest_version=3)
    assert await sched.tick() == []  # same slot
    clock.now += HOUR
    assert await sched.tick() == []  # next slot, but no new data since v3
    assert "no curated data since manifest v3" in sched.check(model("m", HOUR), clock.now).why
    head["d"] = 4
    (second,) = await sched.tick()
    assert second.schedule_slot == "m@3600s:11"


async def test_a_restarted_process_neither_repeats_nor_skips_a_slot(tmp_path: Path) -> None:
    head, clock, port = {"d": 1}, Clock(5 * HOUR + 1), registry(("m", HOUR))
    first = scheduler(tmp_path / "t.db", port, head, clock)
    (run,) = await first.tick()
    finish(first._runs, run, manifest_version=1)
    first._runs.close()
    head["d"] = 2
    again = scheduler(tmp_path / "t.db", port, head, clock)  # a restart within the slot
    assert await again.tick() == []
    # a slot that came due while training was down runs once at start
    clock.now += 3 * HOUR
    (late,) = await again.tick()
    assert late.schedule_slot == "m@3600s:8"
    assert len(again._runs.list("m")) == 2
    # the table refuses a second run for the slot even when asked directly
    assert again._runs.queue("m", "schedule", schedule_slot="m@3600s:8") is None
