"""The training core: turn triggers (drift episodes, new data, operators) into queued runs, and
work the queue one run at a time. No gRPC or Kafka here: the registry is behind `RegistryPort`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import structlog

from driftloop.services.training.core.domain import (
    CandidateVersion,
    Champion,
    ModelInfo,
    RegisteredVersion,
    Registration,
    Run,
    SpecInfo,
)
from driftloop.services.training.core.fleet_runs import child_episode
from driftloop.services.training.core.runs import RunStore
from driftloop.shared import fleet
from driftloop.shared.errors import InvalidInput, NotFound

log = structlog.get_logger(__name__)


class RegistryPort(Protocol):
    """What training needs from the registry (implemented over gRPC in registry_client.py)."""

    async def get_model(self, name: str) -> ModelInfo: ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def production(self, model: str) -> Champion | None:
        """The production version, or None when the model has none."""
        ...

    async def find_run(self, model: str, run_id: str) -> Registration | None:
        """The version already registered for `run_id`, if any."""
        ...

    async def register(self, candidate: CandidateVersion) -> Registration: ...

    async def get_version(self, model: str, version: str) -> RegisteredVersion: ...

    async def get_spec(self, model: str, number: int = 0) -> SpecInfo:
        """Spec version `number` of `model` (0: the current one)."""
        ...


class RunExecutorPort(Protocol):
    async def execute(self, run: Run) -> None: ...


@dataclass(frozen=True)
class AutoTrainPolicy:
    min_rows: int = 1000
    """A model with no production version and no runs is trained once its dataset has this many
    curated rows."""


class Training:
    """Queue runs and work them off; `wake()` is called after every queue insert."""

    def __init__(
        self,
        runs: RunStore,
        registry: RegistryPort,
        executor: RunExecutorPort,
        *,
        auto: AutoTrainPolicy = AutoTrainPolicy(),
        poll_seconds: float = 0.5,
        workers: int = 1,
    ) -> None:
        self._workers = workers
        self._runs = runs
        self._registry = registry
        self._executor = executor
        self._auto = auto
        self._poll = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def start_manual(self, model: str, reason: str) -> Run:
        await self._registry.get_model(model)  # NotFound for unknown models
        run = await asyncio.to_thread(self._runs.queue, model, "manual", reason=reason)
        assert run is not None
        log.info("run_queued", run_id=run.run_id, model=model, trigger="manual", reason=reason)
        self.wake()
        return run

    async def queue_drift(
        self,
        model: str,
        episode_id: str,
        correlation_id: str,
        causation_id: str,
        data_since: float | None,
        caused_at: float | None = None,
        cause_detail: str = "",
        partitions: tuple[str, ...] = (),
    ) -> Run | None:
        """One run per drift episode: None when the episode already has one. A fleet episode
        (`partitions` named) also queues one run per partition, each its own episode; a
        follow-up of an open fleet episode (same id, the partitions that joined it) queues only
        the partitions not queued yet."""
        if not model or not episode_id:
            raise InvalidInput("DriftDetected needs a model and an episode_id")
        for partition in partitions:
            parsed = fleet.parse(partition)
            if parsed is None or parsed.fleet != model:
                raise InvalidInput(
                    f"fleet episode of {model}: {partition!r} is not one of its partition models"
                )
        run = await asyncio.to_thread(
            self._runs.queue,
            model,
            "drift",
            episode_id=episode_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            data_since=data_since,
            caused_at=caused_at,
            cause_detail=cause_detail,
        )
        if run is None:
            log.info("drift_episode_already_has_run", model=model, episode_id=episode_id)
        else:
            log.info(
                "run_queued", run_id=run.run_id, model=model, trigger="drift", episode_id=episode_id
            )
        for partition in partitions:
            await asyncio.to_thread(
                self._runs.queue,
                partition,
                "drift",
                episode_id=child_episode(episode_id, partition),
                correlation_id=correlation_id,
                causation_id=causation_id,
                data_since=data_since,
                caused_at=caused_at,
                cause_detail=f"fleet episode {episode_id} of {model}: {cause_detail}",
            )
        if partitions:
            log.info("fleet_episode_queued", model=model, partitions=len(partitions))
        if run is not None or partitions:
            self.wake()
        return run

    async def queue_auto(self, dataset: str, total_rows: int, causation_id: str) -> list[Run]:
        """First training of each model on `dataset` that has no production and no run yet."""
        if total_rows < self._auto.min_rows:
            return []
        queued = []
        for model in await self._registry.list_models():
            if model.dataset != dataset or model.production_version or model.fleet:
                continue  # a partition model is trained by its fleet's runs
            run = await asyncio.to_thread(
                self._runs.queue,
                model.name,
                "auto",
                causation_id=causation_id,
                only_if_no_runs=True,
            )
            if run is not None:
                log.info(
                    "run_queued",
                    run_id=run.run_id,
                    model=model.name,
                    trigger="auto",
                    dataset=dataset,
                    total_rows=total_rows,
                )
                queued.append(run)
        if queued:
            self.wake()
        return queued

    async def queue_scheduled(self, model: str, slot: str, reason: str) -> Run | None:
        """One run per schedule slot: None when the slot already has one."""
        run = await asyncio.to_thread(
            self._runs.queue, model, "schedule", reason=reason, schedule_slot=slot
        )
        if run is not None:
            log.info("run_queued", run_id=run.run_id, model=model, trigger="schedule", slot=slot)
            self.wake()
        return run

    async def get_run(self, run_id: str) -> Run:
        run = await asyncio.to_thread(self._runs.get, run_id)
        if run is None:
            raise NotFound(f"training run {run_id!r} does not exist")
        return run

    async def list_runs(
        self, model: str = "", limit: int = 50, correlation_id: str = ""
    ) -> list[Run]:
        if limit < 0:
            raise InvalidInput("limit must not be negative")
        return await asyncio.to_thread(self._runs.list, model, limit or 50, correlation_id)

    async def work(self) -> None:
        """The workers (a background task): `workers` loops, each running one queued run at a
        time in the order RunStore.claim_next gives (round-robin across fleets and models)."""
        requeued = await asyncio.to_thread(self._runs.requeue_interrupted)
        if requeued:
            log.info("interrupted_runs_requeued", count=requeued)
        await asyncio.gather(*(self._work_loop() for _ in range(self._workers)))

    async def _work_loop(self) -> None:
        while True:
            self._wake.clear()
            run = await asyncio.to_thread(self._runs.claim_next)
            if run is None:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass  # poll as well, in case a wake-up was missed
                continue
            await self._executor.execute(run)
