"""The schedule trigger: a model whose spec sets schedule_seconds gets one run per time slot,
when new curated data arrived since its last run.

Slots are aligned to the Unix epoch (every 6h: 00:00, 06:00, 12:00, 18:00 UTC) and each run is
keyed by its slot in the run table, so the next due time is derived from the clock and the run
table, never from memory: a restarted (or second) training process neither skips nor repeats a
slot. A slot that came due while training was down is run once at start; older missed slots are
not replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from driftloop.services.training.core.domain import ModelInfo, Run
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.training import RegistryPort, Training
from driftloop.shared.errors import Unavailable

log = structlog.get_logger(__name__)


def slot_of(now: float, period: int) -> int:
    return int(now // period)


def slot_key(model: str, period: int, slot: int) -> str:
    """The idempotency key of one slot ("churn@21600s:81234")."""
    return f"{model}@{period}s:{slot}"


def next_due(now: float, period: int, current_slot_done: bool) -> float:
    """When the model is next due: now, if the current slot has no run yet, else the next
    slot's start."""
    slot = slot_of(now, period)
    return float((slot + 1) * period) if current_slot_done else now


@dataclass(frozen=True)
class Verdict:
    """What the scheduler decided for one model on one tick, and why (for logs and tests)."""

    model: str
    slot: str
    due: bool
    why: str


class Scheduler:
    """`run()` is a background task; `tick()` decides every scheduled model once."""

    def __init__(
        self,
        training: Training,
        runs: RunStore,
        registry: RegistryPort,
        latest_manifest_version: Callable[[str], int],
        *,
        poll_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._training = training
        self._runs = runs
        self._registry = registry
        self._latest = latest_manifest_version
        self._poll = poll_seconds
        self._clock = clock

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Unavailable as exc:
                log.warning("schedule_registry_unreachable", error=str(exc))
            await asyncio.sleep(self._poll)  # poll: slots are minutes to days apart

    async def tick(self) -> list[Run]:
        queued = []
        for model in await self._registry.list_models():
            if model.spec.schedule_seconds <= 0 or model.fleet:
                continue  # a partition model is trained by its fleet's scheduled runs
            verdict = await asyncio.to_thread(self.check, model, self._clock())
            log.debug("schedule_checked", model=model.name, slot=verdict.slot, why=verdict.why)
            if not verdict.due:
                continue
            run = await self._training.queue_scheduled(model.name, verdict.slot, verdict.why)
            if run is not None:
                queued.append(run)
        return queued

    def check(self, model: ModelInfo, now: float) -> Verdict:
        """Is `model` due now? Blocking (run table, manifest head): call via a thread."""
        period = model.spec.schedule_seconds
        key = slot_key(model.name, period, slot_of(now, period))
        if self._runs.has_slot(key):
            due = next_due(now, period, current_slot_done=True)
            return Verdict(model.name, key, False, f"slot has its run; next due at {due:.0f}")
        active, trained_on = self._runs.schedule_state(model.name)
        if active:
            return Verdict(model.name, key, False, "a run of the model is queued or running")
        head = self._latest(model.dataset)
        if head <= trained_on:
            return Verdict(model.name, key, False, f"no curated data since manifest v{trained_on}")
        why = (
            f"schedule every {period}s: slot {key}, manifest v{head} is newer than the last "
            f"run's v{trained_on}"
        )
        return Verdict(model.name, key, True, why)
