"""One training run end to end: pin data, fit and evaluate, store the artifact and profile,
register the candidate. Blocking work (parquet, sklearn, object store) runs in threads.

A drift run decides with the data the decision needs: it waits for the post-drift rows a paired
comparison needs to see the policy's min_improvement (drift_wait.py: with an assumed discordance,
or for a regressor an assumed spread of the per-row error reduction, before any candidate was
scored), and says so on the run. While it waits it is put back in the queue (`not_before`), so
other models' runs go on. When the registry calls the comparison inconclusive, or promotes a
candidate that still fails the floor, the episode is retried on a growing post-drift window (at
least double, or the rows the registry says it needs, or for a regressor the rows the spread it
observed needs) until a candidate is promoted, the evidence shows the champion as good, the
window reaches window_rows, or the policy's max_attempts are spent; every try is its own run,
with its reason. Before registering, the artifact must load as serving will load it.

A fleet's run fits its global model, then queues one run per partition (fleet_runs.py); a
partition's run trains on its own rows (pinning.py) and, until the partition has a production
version, its candidate is compared with the fleet's global model. Champions are loaded once per
artifact and kept for the next runs (champions.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
import structlog
from threadpoolctl import threadpool_limits

from driftloop.services.training.core import champions, fleet_runs, metrics, tasks, trainer
from driftloop.services.training.core.domain import (
    CandidateLineage,
    CandidateVersion,
    DataFileRef,
    ModelInfo,
    ModelSpec,
    Registration,
    Run,
    SpecInfo,
)
from driftloop.services.training.core.drift_wait import observed_need
from driftloop.services.training.core.pinning import DataPinner, DataWait, PinnedData
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.training import RegistryPort
from driftloop.shared import artifacts, fleet
from driftloop.shared.errors import (
    ArtifactRejected,
    DriftloopError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.paired import PairedComparison
from driftloop.shared.run_record import RunRecord, run_record_key

log = structlog.get_logger(__name__)


class RunExecutor:
    def __init__(
        self,
        runs: RunStore,
        store: ObjectStore,
        registry: RegistryPort,
        *,
        wait: DataWait | None = None,
        retry_seconds: float = 2.0,
        fit_threads: int = 1,
        max_partitions: int = fleet.DEFAULT_MAX_PARTITIONS,
        loaded_bytes: int = champions.DEFAULT_MAX_BYTES,
    ) -> None:
        self._fit_threads = fit_threads
        self.loaded = champions.LoadedModels(loaded_bytes)
        self._data = DataPinner(runs, store, wait or DataWait(), max_partitions)
        self._runs = runs
        self._store = store
        self._registry = registry
        self._retry = retry_seconds

    async def execute(self, run: Run) -> None:
        """Run to success or failure; a dependency outage puts the run back in the queue."""
        with structlog.contextvars.bound_contextvars(
            run_id=run.run_id, model=run.model, correlation_id=run.correlation_id
        ):
            if run.wait_started_at is None:
                log.info("run_started", trigger=run.trigger, episode_id=run.episode_id)
            started = time.monotonic()
            try:
                if await self._execute(run):  # else it waits for data: no outcome yet
                    metrics.record_run(run, "succeeded", started)
            except Unavailable as exc:
                log.warning("run_requeued", error=str(exc))
                await asyncio.to_thread(self._runs.requeue, run.run_id, str(exc))
                await asyncio.sleep(self._retry)  # back off before the dependency is tried again
            except DriftloopError as exc:
                log.warning("run_failed", error=str(exc), error_type=type(exc).__name__)
                self._data.waiting.forget(run.run_id)
                await asyncio.to_thread(self._runs.fail, run.run_id, str(exc))
                metrics.record_run(run, "failed", started)
            except Exception as exc:  # noqa: BLE001 - record any crash on the run, keep working
                log.exception("run_crashed")
                self._data.waiting.forget(run.run_id)
                await asyncio.to_thread(self._runs.fail, run.run_id, f"{type(exc).__name__}: {exc}")
                metrics.record_run(run, "failed", started)

    async def _execute(self, run: Run) -> bool:
        """Run `run` to its outcome (True), or put it back in the queue to wait for data."""
        if await asyncio.to_thread(self._data.recheck, run):
            return False  # still waiting, and nothing arrived that could change that
        model, spec, known = await self._model_and_spec(run)
        done = await self._registry.find_run(run.model, run.run_id) if known else None
        if done is not None:  # a killed run that had registered: record, do not redo
            await asyncio.to_thread(self._runs.succeed, run.run_id, done, 0.0)
            log.info("run_already_registered", version=done.version)
            return True
        data = await self._data.pin(run, model)
        if data is None:  # deferred until more rows arrive; the worker goes on meanwhile
            return False
        await asyncio.to_thread(self._runs.record_data_wait, run.run_id, data.waited_seconds)
        if data.note:
            await asyncio.to_thread(self._runs.add_reason, run.run_id, data.note)
        await self._progress(run, "fitting")
        champion = await self._registry.production(model.name) if known else None
        against_global = champion is None and bool(model.fleet)
        if against_global:
            # a partition's first candidates must beat the fleet's global model, which serves
            # the partition meanwhile (the registry compares them with it as well)
            champion = await self._registry.production(model.fleet)
        champion_model = None
        if champion is not None:
            champion_model = await asyncio.to_thread(
                self._load, champion.artifact_uri, champion.artifact_sha256
            )
        result = await asyncio.to_thread(self._train, run, model, data, champion_model)
        await asyncio.to_thread(
            self._runs.record_data,
            run.run_id,
            data.manifest.version,
            result.training_rows,
            result.search.best_params if result.search else None,
        )
        champion_version = champion.version if champion else ""
        candidate = await asyncio.to_thread(
            self._store_outputs, run, model, data, result, champion_version, spec
        )
        await self._progress(run, "registering")
        registration = await self._registry.register(candidate)
        await asyncio.to_thread(self._runs.succeed, run.run_id, registration, result.fit_seconds)
        log.info(
            "run_succeeded",
            version=registration.version,
            promoted=registration.promoted,
            outcome=registration.outcome,
            reason=registration.decision_reason,
            metrics=result.metrics,
            champion_metrics=result.champion_metrics,
        )
        if model.spec.partition_by and not model.fleet and run.trigger != "drift":
            await asyncio.to_thread(self._queue_partitions, run, model, data)
        if against_global:
            await asyncio.to_thread(
                self._requeue_when_grown, run, model, registration, len(data.frame)
            )
        if run.trigger == "drift" and run.episode_id and data.since is not None:
            await asyncio.to_thread(
                self._retry_if_undecided,
                run,
                model.spec,
                registration,
                result.holdout_rows,
                result.comparison,
            )
        return True

    def _retry_if_undecided(
        self,
        run: Run,
        spec: ModelSpec,
        reg: Registration,
        rows: int,
        comparison: PairedComparison | None = None,
    ) -> Run | None:
        """Queue the episode's next attempt on a larger post-drift window while more rows may
        still give a better model: the registry's comparison could not decide, or it promoted
        a candidate fitted on fewer rows than window_rows (the next, on twice the rows, must
        beat that one). A conclusive "not better" ends the episode. A regression attempt also
        waits for the rows its own comparison's observed spread says are needed."""
        if reg.outcome not in ("inconclusive", "promoted"):
            return None
        why_not = ""
        observed, observed_why = observed_need(spec, comparison)
        wanted = min(spec.window_rows, max(2 * rows, reg.rows_needed, observed))
        if run.attempt >= spec.evidence.max_attempts:
            why_not = f"the policy's max_attempts ({spec.evidence.max_attempts}) are spent"
        elif wanted <= rows:
            why_not = f"the window already holds window_rows ({spec.window_rows}) rows"
        if why_not:
            event = "drift_episode_settled" if reg.promoted else "drift_episode_undecided"
            log.info(event, episode_id=run.episode_id, why=why_not)
            return None
        need = f"the registry needs about {reg.rows_needed}" if reg.rows_needed else "unknown"
        if observed_why:
            need = f"{need}; {observed_why}" if reg.rows_needed else observed_why
        why = (
            f"{wanted} post-drift rows: attempt {run.attempt} was {reg.outcome} on {rows} rows "
            f"(rows needed: {need}); at least double, at most window_rows"
        )
        queued = self._runs.queue(
            run.model,
            "drift",
            episode_id=run.episode_id,
            attempt=run.attempt + 1,
            correlation_id=run.correlation_id,
            causation_id=run.causation_id,
            data_since=run.data_since,
            caused_at=run.caused_at,
            cause_detail=run.cause_detail,
            reason=f"retry {run.attempt + 1}/{spec.evidence.max_attempts} of drift episode "
            f"{run.episode_id}: version {reg.version} {reg.outcome}",
            wait_rows=wanted,
            wait_reason=why,
        )
        if queued is not None:
            log.info(
                "drift_retry_queued", run_id=queued.run_id, attempt=queued.attempt, rows=wanted
            )
        return queued

    def _queue_partitions(self, run: Run, model: ModelInfo, data: PinnedData) -> None:
        """After a fleet's global model: one run per partition with min_rows rows in the same
        data (queued once per fleet run, even when the fleet run is redone)."""
        sizes = self._data.grouped(model, data.manifest).sizes()
        eligible = [s for s, n in sorted(sizes.items(), key=lambda p: (-p[1], p[0]))]
        eligible = [s for s in eligible if sizes[s] >= model.spec.min_rows]
        for suffix in eligible:
            self._runs.queue(
                f"{model.name}/{suffix}",
                run.trigger,
                correlation_id=run.correlation_id,
                causation_id=run.causation_id,
                reason=f"partition of fleet run {run.run_id} ({sizes[suffix]} rows)",
                schedule_slot=fleet_runs.child_slot(run.run_id, suffix),
            )
        log.info(
            "fleet_partitions_queued",
            partitions=len(eligible),
            seen=len(sizes),
            min_rows=model.spec.min_rows,
        )

    def _requeue_when_grown(
        self, run: Run, model: ModelInfo, reg: Registration, rows: int
    ) -> Run | None:
        """A partition with no production version whose candidate was inconclusive against the
        fleet's global model would get no further run (only drift runs retry): queue one that
        waits until the partition's rows have doubled (or grown by window_rows, when the window
        is full already), so the next comparison has about twice the evidence. Once per run
        (idempotent by its slot), at most the policy's max_attempts in a row."""
        if reg.outcome != "inconclusive" or run.trigger == "drift" or not model.fleet:
            return None
        if run.attempt >= model.spec.evidence.max_attempts:
            log.info("partition_left_to_global_model", rows=rows, attempts=run.attempt)
            return None
        wanted = rows + min(rows, model.spec.window_rows)
        queued = self._runs.queue(
            run.model,
            run.trigger,
            correlation_id=run.correlation_id,
            causation_id=run.causation_id,
            reason=f"version {reg.version} of this partition was inconclusive against the "
            f"fleet's global model on {rows} rows: again once the partition has {wanted}",
            schedule_slot=fleet_runs.grown_slot(run.run_id),
            attempt=run.attempt + 1,
            wait_rows=wanted,
            wait_reason=f"{wanted} rows of the partition: twice the evidence of the inconclusive "
            f"comparison on {rows} (at most window_rows {model.spec.window_rows} more)",
        )
        if queued is not None:
            log.info("partition_requeued_when_grown", run_id=queued.run_id, rows=wanted)
        return queued

    async def _model_and_spec(self, run: Run) -> tuple[ModelInfo, SpecInfo, bool]:
        """The model, with the spec version current now (recorded on the run), and whether the
        registry knows it. A partition that has no version yet is not in the registry: it is its
        fleet's model under its own name (the registry creates it on the first registration)."""
        parsed = fleet.parse(run.model)
        known = True
        try:
            model = await self._registry.get_model(run.model)
        except NotFound:
            if parsed is None:
                raise
            owner = await self._registry.get_model(parsed.fleet)
            model = replace(owner, name=run.model, fleet=owner.name, production_version="")
            known = False
        spec = await self._registry.get_spec(model.fleet or run.model, 0)
        await asyncio.to_thread(self._runs.record_spec, run.run_id, spec.number)
        return replace(model, spec=spec.spec, spec_version=spec.number), spec, known

    async def _progress(self, run: Run, text: str) -> None:
        await asyncio.to_thread(self._runs.record_progress, run.run_id, text)

    def _load(self, key: str, sha256: str) -> Any:
        return self.loaded.load(sha256, lambda: self._store.get(key))

    def _train(
        self, run: Run, model: ModelInfo, data: PinnedData, champion: Any | None
    ) -> trainer.TrainedCandidate:
        frame, note = self._learnable_rows(run, model, data.frame)
        window = trainer.select_window(
            frame,
            model.target,
            model.spec.window_rows,
            model.spec.task,
            partition_by=() if model.fleet else model.spec.partition_by,
        )
        least = data.min_rows or model.spec.min_rows
        if len(window) < least:
            numeric = "numeric " if tasks.is_regression(model.spec.task) else ""
            raise InvalidInput(
                f"only {len(window)} curated rows with a {numeric}{model.target!r} value in the "
                f"window; model {model.name} needs at least {least}"
                + (f" ({note})" if note else "")
            )
        if least != model.spec.min_rows:  # a drift run's short post-drift window
            model = replace(model, spec=replace(model.spec, min_rows=least))
        # why: OpenMP estimators (histogram gradient boosting) spin-wait for their threads; on a
        # small machine shared with the other services a fit with one thread per core took 40 s
        # instead of 0.1 s when the cores were busy
        with threadpool_limits(limits=self._fit_threads):
            return self._fit(run, model, window, champion, data)

    def _fit(
        self,
        run: Run,
        model: ModelInfo,
        window: pd.DataFrame,
        champion: Any | None,
        data: PinnedData,
    ) -> trainer.TrainedCandidate:
        return trainer.train_candidate(
            model.name,
            window,
            model.target,
            model.spec,
            champion,
            # why: when the champion cannot have seen the window (a post-drift window, or no
            # champion at all), scoring every row out of fold gives the paired comparison, and
            # the monitor's reference accuracy, five times the rows of a holdout (see trainer)
            cross_validate=data.since is not None or champion is None,
        )

    def _learnable_rows(
        self, run: Run, model: ModelInfo, frame: pd.DataFrame
    ) -> tuple[pd.DataFrame, str]:
        """The rows a model of the spec's task can learn from, and a note of those left out
        (regression: rows whose target does not parse as a number), kept on the run's reason
        and logged."""
        if not tasks.is_regression(model.spec.task) or model.target not in frame.columns:
            return frame, ""
        parsed = tasks.numeric_target(frame, model.target)
        if not parsed.left_out:
            return parsed.rows, ""
        note = parsed.note(model.target)
        log.warning("target_rows_left_out", rows=parsed.left_out, examples=list(parsed.examples))
        self._runs.add_reason(run.run_id, note)
        return parsed.rows, note

    def _store_outputs(
        self,
        run: Run,
        model: ModelInfo,
        data: PinnedData,
        result: trainer.TrainedCandidate,
        champion_version: str,
        spec_info: SpecInfo,
    ) -> CandidateVersion:
        body = artifacts.dump_model(result.pipeline)
        digest = artifacts.sha256(body)
        # kept: this version is the champion of its model's next attempt (and a global model,
        # of every new partition's first run)
        self.loaded.keep(digest, servable(body, model.spec.estimator, digest), len(body))
        artifact_key = f"artifacts/{model.name}/{run.run_id}/model.skops"
        profile_key = f"artifacts/{model.name}/{run.run_id}/profile.json"
        self._store.put(artifact_key, body)
        self._store.put(profile_key, result.profile.to_json())
        record = RunRecord(
            run.run_id,
            result.metrics,
            result.champion_metrics,
            champion_version,
            result.comparison,
        )
        self._store.put(run_record_key(model.name, run.run_id), record.to_json())
        files = [
            f for f in data.manifest.files if data.since is None or f.max_ingested_at >= data.since
        ]
        spec = model.spec
        lineage = CandidateLineage(
            run_id=run.run_id,
            manifest_version=data.manifest.version,
            manifest_key=data.manifest.key,
            files=tuple(DataFileRef(f.key, f.sha256, f.rows) for f in files),
            params=lineage_params(spec, result, data.since),
            code_version=trainer.code_version(),
            causing_event_id=run.causation_id,
            correlation_id=run.correlation_id,
            episode_id=run.episode_id or "",
            parent_version=champion_version,
            trigger=run.trigger,
            training_rows=result.training_rows,
            spec_version=spec_info.number,
            spec_sha256=spec_info.sha256,
        )
        return CandidateVersion(
            model=model.name,
            run_id=run.run_id,
            artifact_uri=artifact_key,
            artifact_sha256=digest,
            profile_uri=profile_key,
            metrics=result.metrics,
            champion_metrics=result.champion_metrics,
            champion_version=champion_version,
            lineage=lineage,
            correlation_id=run.correlation_id,
            causation_id=run.causation_id,
            slice_metrics=result.slices,
            champion_slice_metrics=result.champion_slices,
            comparison=result.comparison,
        )


def servable(body: bytes, estimator: str, sha256: str = "") -> Any:
    """The dumped artifact loaded as serving will load it, or InvalidInput: an allow-listed
    estimator whose parameters bring a type outside artifacts.TRUSTED_TYPES fails its run here,
    naming the types, instead of being registered and refused by every deploy."""
    try:
        return artifacts.load_model(body, sha256 or artifacts.sha256(body))
    except ArtifactRejected as exc:
        raise InvalidInput(
            f"the fitted {estimator} cannot be served, so it is not registered: {exc}; these "
            "types are outside driftloop's trusted list (driftloop.shared.artifacts."
            "TRUSTED_TYPES): choose other estimator parameters"
        ) from exc


def lineage_params(
    spec: ModelSpec, result: trainer.TrainedCandidate, since: float | None
) -> dict[str, str]:
    """Everything needed to redo the fit: the spec as trained, the seed, the data window's
    start, and the library versions and time of this training."""
    params = {
        "estimator": spec.estimator,
        **spec.params,
        "estimator_params": json.dumps(spec.params, sort_keys=True),
        "features": json.dumps(result.features),
        "window_rows": str(spec.window_rows),
        "holdout_fraction": str(spec.holdout_fraction),
        "min_rows": str(spec.min_rows),
        "seed": str(trainer.SEED),
        "evaluation": result.evaluation,
        "fit_seconds": f"{result.fit_seconds:.4f}",
        "trained_at": f"{time.time():.3f}",
        **{f"lib.{name}": version for name, version in trainer.library_versions().items()},
    }
    if tasks.is_regression(spec.task):
        params["task"] = spec.task  # classification versions keep their lineage unchanged
    if spec.slice_columns:
        params["slice_columns"] = json.dumps(list(spec.slice_columns))
    if spec.search.param_grid:
        params["search"] = json.dumps(asdict(spec.search), sort_keys=True)
    if result.search is not None:
        params["search.best_params"] = json.dumps(result.search.best_params, sort_keys=True)
        params["search.best_cv_score"] = f"{result.search.best_score:.6f}"
        params["search.candidates"] = str(result.search.candidates)
        params["search.method"] = result.search.method
    if since is not None:
        params["data_since"] = repr(since)
    return params
