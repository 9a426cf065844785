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
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
import structlog
from threadpoolctl import threadpool_limits

from driftloop.services.training.core import metrics, tasks, trainer
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
from driftloop.services.training.core.drift_wait import first_wait, observed_need
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.training import RegistryPort
from driftloop.shared import artifacts, manifest
from driftloop.shared.errors import (
    ArtifactRejected,
    DriftloopError,
    InvalidInput,
    NotReady,
    Unavailable,
)
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.paired import PairedComparison
from driftloop.shared.run_record import RunRecord, run_record_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DataWait:
    """How a drift run waits for rows ingested after the drift began."""

    min_rows_after_drift: int = 500
    """The least a drift run waits for, whatever the statistics say."""
    max_wait_seconds: float = 60.0
    """A first attempt then trains on the post-drift rows there are (or, with fewer than the
    spec's min_rows, on the whole dataset)."""
    poll_seconds: float = 0.5
    retry_wait_seconds: float = 600.0
    """A retry that still lacks its rows after this fails, ending the episode's retries."""


@dataclass(frozen=True)
class PinnedData:
    manifest: manifest.DatasetManifest
    frame: pd.DataFrame
    since: float | None
    waited_seconds: float = 0.0
    """Time spent waiting for rows after the drift (sample accumulation), not reading them."""


class RunExecutor:
    def __init__(
        self,
        runs: RunStore,
        store: ObjectStore,
        registry: RegistryPort,
        *,
        wait: DataWait = DataWait(),
        retry_seconds: float = 2.0,
        fit_threads: int = 1,
    ) -> None:
        self._fit_threads = fit_threads
        self._runs = runs
        self._store = store
        self._registry = registry
        self._wait = wait
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
                await self._execute(run)
                metrics.record_run(run, "succeeded", started)
            except Unavailable as exc:
                log.warning("run_requeued", error=str(exc))
                await asyncio.to_thread(self._runs.requeue, run.run_id, str(exc))
                await asyncio.sleep(self._retry)  # back off before the dependency is tried again
            except DriftloopError as exc:
                log.warning("run_failed", error=str(exc), error_type=type(exc).__name__)
                await asyncio.to_thread(self._runs.fail, run.run_id, str(exc))
                metrics.record_run(run, "failed", started)
            except Exception as exc:  # noqa: BLE001 - record any crash on the run, keep working
                log.exception("run_crashed")
                await asyncio.to_thread(self._runs.fail, run.run_id, f"{type(exc).__name__}: {exc}")
                metrics.record_run(run, "failed", started)

    async def _execute(self, run: Run) -> None:
        done = await self._registry.find_run(run.model, run.run_id)
        if done is not None:  # a killed run that had registered: record, do not redo
            await asyncio.to_thread(self._runs.succeed, run.run_id, done, 0.0)
            log.info("run_already_registered", version=done.version)
            return
        model, spec = await self._model_and_spec(run)
        data = await self._pin_data(run, model)
        if data is None:  # deferred until more rows arrive; the worker goes on meanwhile
            return
        await asyncio.to_thread(self._runs.record_data_wait, run.run_id, data.waited_seconds)
        await self._progress(run, "fitting")
        champion = await self._registry.production(model.name)
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
        if run.trigger == "drift" and run.episode_id and data.since is not None:
            await asyncio.to_thread(
                self._retry_if_undecided,
                run,
                model.spec,
                registration,
                result.holdout_rows,
                result.comparison,
            )

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

    async def _model_and_spec(self, run: Run) -> tuple[ModelInfo, SpecInfo]:
        """The model, with the spec version current now (recorded on the run)."""
        model = await self._registry.get_model(run.model)
        spec = await self._registry.get_spec(run.model, 0)
        await asyncio.to_thread(self._runs.record_spec, run.run_id, spec.number)
        return replace(model, spec=spec.spec, spec_version=spec.number), spec

    async def _progress(self, run: Run, text: str) -> None:
        await asyncio.to_thread(self._runs.record_progress, run.run_id, text)

    async def _pin_data(self, run: Run, model: ModelInfo) -> PinnedData | None:
        """The data to train on; for a drift run, the rows ingested since the drift once there
        are enough of them, or None after putting the run back in the queue to wait."""
        pinned = await asyncio.to_thread(self._latest, model)
        if run.trigger != "drift" or run.data_since is None:
            return PinnedData(pinned, await asyncio.to_thread(self._read, pinned, None), None)
        since = run.data_since
        wanted = run.wait_rows
        if not wanted:
            wanted, why = first_wait(model.spec, self._wait.min_rows_after_drift)
            await asyncio.to_thread(self._runs.record_wait, run.run_id, wanted, why)
        now = time.time()
        started = run.wait_started_at or now
        recent = await asyncio.to_thread(self._rows_since, pinned, since, wanted)
        if recent is not None:
            log.info("drift_window_ready", rows=len(recent), manifest_version=pinned.version)
            return PinnedData(pinned, recent, since, now - started)
        budget = self._wait.max_wait_seconds if run.attempt == 1 else self._wait.retry_wait_seconds
        if now - started < budget:
            await asyncio.to_thread(
                self._runs.defer,
                run.run_id,
                now + self._wait.poll_seconds,
                self._wait_progress(pinned, since, wanted),
                started,
            )
            return None
        have = await asyncio.to_thread(self._read, pinned, since)
        if run.attempt > 1:
            raise InvalidInput(
                f"only {len(have)} of the {wanted} post-drift rows this retry waits for arrived "
                f"within {budget:.0f}s; the episode's retries end here"
            )
        log.warning("drift_data_wait_expired", since=since, rows=len(have), wanted=wanted)
        if len(have) >= model.spec.min_rows:
            return PinnedData(pinned, have, since, now - started)
        frame = await asyncio.to_thread(self._read, pinned, None)
        return PinnedData(pinned, frame, None, now - started)

    def _wait_progress(self, pinned: manifest.DatasetManifest, since: float, wanted: int) -> str:
        rows = sum(f.rows for f in pinned.files if f.max_ingested_at >= since)
        return f"waiting for data ({rows}/{wanted} rows after the drift)"

    def _latest(self, model: ModelInfo) -> manifest.DatasetManifest:
        pinned = manifest.latest_manifest(self._store, model.dataset)
        if pinned is None:
            raise NotReady(f"dataset {model.dataset!r} has no curated data yet: ingest rows first")
        if pinned.total_rows < model.spec.min_rows:
            raise InvalidInput(
                f"dataset {model.dataset!r} has {pinned.total_rows} curated rows; model "
                f"{model.name} needs at least {model.spec.min_rows} (spec.min_rows)"
            )
        return pinned

    def _read(self, pinned: manifest.DatasetManifest, since: float | None) -> pd.DataFrame:
        return manifest.read_snapshot(self._store, pinned, since=since)

    def _rows_since(
        self, pinned: manifest.DatasetManifest, since: float, wanted: int
    ) -> pd.DataFrame | None:
        """Rows ingested at/after `since`, or None while there are fewer than `wanted`."""
        estimate = sum(f.rows for f in pinned.files if f.max_ingested_at >= since)
        if estimate < wanted:
            return None
        frame = self._read(pinned, since)
        return frame if len(frame) >= wanted else None

    def _load(self, key: str, sha256: str) -> Any:
        return artifacts.load_model(self._store.get(key), sha256)

    def _train(
        self, run: Run, model: ModelInfo, data: PinnedData, champion: Any | None
    ) -> trainer.TrainedCandidate:
        frame, note = self._learnable_rows(run, model, data.frame)
        window = trainer.select_window(frame, model.target, model.spec.window_rows, model.spec.task)
        if len(window) < model.spec.min_rows:
            numeric = "numeric " if tasks.is_regression(model.spec.task) else ""
            raise InvalidInput(
                f"only {len(window)} curated rows with a {numeric}{model.target!r} value in the "
                f"window; model {model.name} needs at least {model.spec.min_rows}"
                + (f" ({note})" if note else "")
            )
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
        servable(body, model.spec.estimator)
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
            code_version=importlib.metadata.version("driftloop"),
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
            artifact_sha256=artifacts.sha256(body),
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


def servable(body: bytes, estimator: str) -> None:
    """InvalidInput unless the dumped artifact loads as serving will load it: an allow-listed
    estimator whose parameters bring a type outside artifacts.TRUSTED_TYPES fails its run here,
    naming the types, instead of being registered and refused by every deploy."""
    try:
        artifacts.load_model(body, artifacts.sha256(body))
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
