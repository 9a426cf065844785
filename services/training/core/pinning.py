"""The data a training run trains on: the dataset's latest manifest; for a drift run, the rows
ingested since the drift once there are enough of them (the run is put back in the queue
meanwhile), and never the mostly pre-drift whole window when the wait ends short; for a fleet,
its partition count checked and its rows grouped by partition (fleet_snapshot.py: read once per
dataset, then only new files), a partition model's own rows only. A run's first poll asks the
registry for its model; its next polls, while no rows arrived, do not (waiting.py).
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import structlog

from driftloop.services.training.core import fleet_snapshot
from driftloop.services.training.core.domain import ModelInfo, Run
from driftloop.services.training.core.drift_wait import first_wait, usable_rows
from driftloop.services.training.core.runs import RunStore
from driftloop.services.training.core.waiting import WaitFor, Waiting, WaitingRuns
from driftloop.shared import fleet, manifest
from driftloop.shared.errors import ArtifactRejected, InvalidInput, NotReady
from driftloop.shared.objectstore import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DataWait:
    """How a drift run waits for rows ingested after the drift began."""

    min_rows_after_drift: int = 500
    """The least a drift run waits for, whatever the statistics say."""
    max_wait_seconds: float = 60.0
    """A first attempt then trains on the post-drift rows there are, when there are at least
    drift_wait.usable_rows of them; otherwise it goes on waiting for those."""
    poll_seconds: float = 0.5
    retry_wait_seconds: float = 600.0
    """A retry that still lacks its rows after this fails, ending the episode's retries; a first
    attempt that has not even the usable rows by then fails too (never training on mostly
    pre-drift rows)."""
    growth_poll_seconds: float = 10.0
    """How often a partition run waiting for its partition to grow (an inconclusive first
    comparison with the global model) looks again."""


@dataclass(frozen=True)
class PinnedData:
    manifest: manifest.DatasetManifest
    frame: pd.DataFrame
    since: float | None
    waited_seconds: float = 0.0
    """Time spent waiting for rows after the drift (sample accumulation), not reading them."""
    min_rows: int = 0
    """The fewest rows this run may train on (0: the spec's min_rows); a drift run whose wait
    ended short trains on fewer post-drift rows (drift_wait.usable_rows)."""
    note: str = ""
    """Which rows the run trains on and why, for its reason (shown by `driftloop trace`)."""


class DataPinner:
    def __init__(
        self,
        runs: RunStore,
        store: ObjectStore,
        wait: DataWait,
        max_partitions: int = fleet.DEFAULT_MAX_PARTITIONS,
        cache_bytes: int = fleet_snapshot.DEFAULT_MAX_BYTES,
    ) -> None:
        self._runs = runs
        self._store = store
        self._wait = wait
        self._max_partitions = max_partitions
        self.snapshots = fleet_snapshot.SnapshotCache(cache_bytes)
        self._manifests: dict[str, manifest.DatasetManifest] = {}
        self.waiting = WaitingRuns()

    def grouped(
        self, model: ModelInfo, pinned: manifest.DatasetManifest
    ) -> fleet_snapshot.PartitionsView:
        """The fleet's rows of `pinned` grouped by partition (read once per dataset, then only
        the new files of each newer manifest version)."""
        return self.snapshots.view(
            pinned, model.spec.partition_by, self._read_files, self._max_partitions
        )

    def _read_files(self, files: list[manifest.ManifestFile]) -> tuple[pd.DataFrame, np.ndarray]:
        frames, positions = [], []
        for number, f in enumerate(files):
            data = self._store.get(f.key)
            if manifest.sha256(data) != f.sha256:
                raise ArtifactRejected(
                    f"curated file {f.key} does not match its manifest hash: the data was altered"
                )
            frame = pq.read_table(io.BytesIO(data)).to_pandas()
            frames.append(frame)
            positions.append(np.full(len(frame), number, dtype=np.int32))
        if not frames:
            return pd.DataFrame(), np.zeros(0, dtype=np.int32)
        return pd.concat(frames, ignore_index=True), np.concatenate(positions)

    async def pin(self, run: Run, model: ModelInfo) -> PinnedData | None:
        """The data to train on; for a drift run, the rows ingested since the drift once there
        are enough of them, or None after putting the run back in the queue to wait."""
        self.waiting.forget(run.run_id)  # remembered again when it goes on waiting
        pinned = await asyncio.to_thread(self._latest, model)
        if run.trigger != "drift" or run.data_since is None:
            if run.wait_rows and model.fleet:
                return await self._grown(run, model, pinned)
            frame = await asyncio.to_thread(self._read, pinned, None, model)
            return PinnedData(pinned, frame, None)
        since = run.data_since
        wanted = run.wait_rows
        if not wanted:
            wanted, why = first_wait(model.spec, self._wait.min_rows_after_drift)
            await asyncio.to_thread(self._runs.record_wait, run.run_id, wanted, why)
        now = time.time()
        started = run.wait_started_at or now
        recent = await asyncio.to_thread(self._rows_since, pinned, since, wanted, model)
        if recent is not None:
            log.info("drift_window_ready", rows=len(recent), manifest_version=pinned.version)
            note = (
                f"trained on the {len(recent)} rows ingested after the drift ({wanted} waited for)"
            )
            return PinnedData(pinned, recent, since, now - started, note=note)
        budget = self._wait.max_wait_seconds if run.attempt == 1 else self._wait.retry_wait_seconds
        if now - started < budget:
            wait = WaitFor(
                wanted,
                since,
                f"waiting for data ({{rows}}/{wanted} rows after the drift)",
                self._wait.poll_seconds,
                started + budget,
            )
            rows = await asyncio.to_thread(self._rows_waited, pinned, since, model)
            await self._defer(run, model, pinned.version, started, wait, rows)
            return None
        have = await asyncio.to_thread(self._read, pinned, since, model)
        if run.attempt > 1:
            raise InvalidInput(
                f"only {len(have)} of the {wanted} post-drift rows this retry waits for arrived "
                f"within {budget:.0f}s; the episode's retries end here"
            )
        return await self._short_window(run, model, pinned, have, wanted, now - started)

    async def _short_window(
        self,
        run: Run,
        model: ModelInfo,
        pinned: manifest.DatasetManifest,
        have: pd.DataFrame,
        wanted: int,
        waited: float,
    ) -> PinnedData | None:
        """A first attempt's wait for `wanted` rows ended: train on the post-drift rows when
        there are usable_rows of them, else go on waiting for those while the episode may last
        (retry_wait_seconds); never on the whole window, which is mostly pre-drift rows."""
        usable, why = usable_rows(model.spec)
        log.warning("drift_data_wait_expired", rows=len(have), wanted=wanted, usable=usable)
        if len(have) >= usable:
            note = (
                f"trained on the {len(have)} rows ingested after the drift only: the wait for "
                f"{wanted} ended after {waited:.0f}s, and a drift run trains on {why}"
            )
            return PinnedData(pinned, have, run.data_since, waited, min(usable, len(have)), note)
        if waited < self._wait.retry_wait_seconds:
            started = run.wait_started_at or time.time() - waited
            wait = WaitFor(
                usable,
                run.data_since,
                f"waiting for data ({{rows}}/{usable} usable rows after the drift; the wait "
                f"for {wanted} ended)",
                self._wait.poll_seconds,
                started + self._wait.retry_wait_seconds,
            )
            await self._defer(run, model, pinned.version, started, wait, len(have))
            return None
        raise InvalidInput(
            f"only {len(have)} rows arrived after the drift within {waited:.0f}s; a drift run "
            f"trains on {why}, never on the pre-drift rows of the whole window"
        )

    async def _grown(
        self, run: Run, model: ModelInfo, pinned: manifest.DatasetManifest
    ) -> PinnedData | None:
        """A partition run queued for when its partition has `wait_rows` rows (its last
        comparison with the global model was inconclusive); waits for them without a deadline."""
        view = await asyncio.to_thread(self.grouped, model, pinned)
        rows = view.count(model.partition)
        if rows < run.wait_rows:
            started = run.wait_started_at or time.time()
            wait = WaitFor(
                run.wait_rows,
                None,
                f"waiting for data ({{rows}}/{run.wait_rows} rows of the partition)",
                self._wait.growth_poll_seconds,
            )
            await self._defer(run, model, pinned.version, started, wait, rows)
            return None
        frame = view.rows(model.partition)
        note = f"trained on the partition's {len(frame)} rows ({run.wait_rows} waited for)"
        return PinnedData(pinned, frame, None, note=note)

    async def _defer(
        self, run: Run, model: ModelInfo, version: int, started: float, wait: WaitFor, rows: int
    ) -> None:
        """Put the run back in the queue for `wait.poll` seconds, and remember what it waits
        for, so that its next polls need no registry call while no rows arrive (recheck)."""
        due = time.time() + wait.poll
        await asyncio.to_thread(self._runs.defer, run.run_id, due, wait.text(rows), started)
        self.waiting.add(
            Waiting(
                run.run_id,
                model.dataset,
                model.partition,
                model.spec.partition_by,
                wait,
                started,
                version,
                rows,
            )
        )

    def _rows_waited(self, pinned: manifest.DatasetManifest, since: float, model: ModelInfo) -> int:
        """The rows since `since` a drift run's progress shows: a partition's own, or an upper
        bound from the manifest (its files' row counts)."""
        if model.fleet:
            return self.grouped(model, pinned).count(model.partition, since)
        return sum(f.rows for f in pinned.files if f.max_ingested_at >= since)

    def recheck(self, run: Run) -> bool:
        """True when `run` still waits for its rows: it was put back in the queue, with every
        run that waits on the same dataset's same version, without a registry call or a read
        (waiting.py). False when it needs the full poll: it is not known to wait, its wait's
        deadline passed, its rows may be there, or a new version came for a model other than a
        fleet's partition (whose rows are counted in memory)."""
        known = self.waiting.get(run.run_id)
        if known is None or run.wait_started_at is None:
            return False
        now = time.time()
        if now >= known.wait.deadline:
            self.waiting.forget(run.run_id)
            return False
        head = manifest.manifest_head(self._store, known.dataset)
        if head is None:
            return False
        woken: list[tuple[str, float, str, float]] = []
        if head.version != known.version:
            if not known.partition:
                return False
            woken = self._recount(known.dataset, head.version, now)
            if any(w[0] == run.run_id for w in woken):
                return False
        waits = [w for w in woken if w[0] != run.run_id]
        for w in self.waiting.of_dataset(known.dataset):
            due = now + w.wait.poll
            if w.version == head.version and (w.run_id == run.run_id or due < w.wait.deadline):
                waits.append((w.run_id, due, w.progress, w.started))
        left = self._runs.defer_many(run.run_id, waits)
        self.waiting.forget(*(r for r in left if r != run.run_id))
        return True

    def _recount(
        self, dataset: str, version: int, now: float
    ) -> list[tuple[str, float, str, float]]:
        """Count again, in manifest version `version`, the rows of every fleet partition run
        waiting on `dataset` (whose wait is not over); the ones that have their rows now are
        forgotten and returned, to be woken (queued for now)."""
        pinned = self._manifest(dataset, version)
        woken = []
        for w in self.waiting.of_dataset(dataset):
            if w.version == version or not w.partition or now >= w.wait.deadline:
                continue
            view = self.snapshots.view(
                pinned, w.partition_by, self._read_files, self._max_partitions
            )
            rows = view.count(w.partition, w.wait.since)
            if rows >= w.wait.need:
                self.waiting.forget(w.run_id)
                woken.append((w.run_id, now, w.wait.text(rows), w.started))
            else:
                self.waiting.add(w.counted(version, rows))
        return woken

    def _latest(self, model: ModelInfo) -> manifest.DatasetManifest:
        """The dataset's head manifest; a version already read is not parsed again (a run that
        waits for data looks every poll_seconds)."""
        head = manifest.manifest_head(self._store, model.dataset)
        if head is None:
            raise NotReady(f"dataset {model.dataset!r} has no curated data yet: ingest rows first")
        pinned = self._manifest(model.dataset, head.version)
        if pinned.total_rows < model.spec.min_rows:
            raise InvalidInput(
                f"dataset {model.dataset!r} has {pinned.total_rows} curated rows; model "
                f"{model.name} needs at least {model.spec.min_rows} (spec.min_rows)"
            )
        return pinned

    def _manifest(self, dataset: str, version: int) -> manifest.DatasetManifest:
        pinned = self._manifests.get(dataset)
        if pinned is None or pinned.version != version:
            pinned = manifest.read_manifest(self._store, dataset, version)
            self._manifests[dataset] = pinned
        return pinned

    def _read(
        self, pinned: manifest.DatasetManifest, since: float | None, model: ModelInfo
    ) -> pd.DataFrame:
        """The snapshot's rows (since `since`); a partition model's own rows only; for a fleet,
        after checking its partition count (DRIFTLOOP_TRAINING_MAX_PARTITIONS)."""
        if model.fleet:
            return self.grouped(model, pinned).rows(model.partition, since)
        if model.spec.partition_by:
            return self.grouped(model, pinned).frame(since)
        return manifest.read_snapshot(self._store, pinned, since=since)

    def _rows_since(
        self, pinned: manifest.DatasetManifest, since: float, wanted: int, model: ModelInfo
    ) -> pd.DataFrame | None:
        """Rows ingested at/after `since`, or None while there are fewer than `wanted`."""
        estimate = sum(f.rows for f in pinned.files if f.max_ingested_at >= since)
        if estimate < wanted:  # an upper bound for a partition's rows
            return None
        if model.fleet and self.grouped(model, pinned).count(model.partition, since) < wanted:
            return None
        frame = self._read(pinned, since, model)
        return frame if len(frame) >= wanted else None
