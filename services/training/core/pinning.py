"""The data a training run trains on: the dataset's latest manifest, read once per snapshot;
for a drift run, the rows ingested since the drift once there are enough of them (the run is put
back in the queue meanwhile); for a fleet, its partition count checked and its rows grouped by
partition (fleet_runs.FleetFrames), a partition model's own rows only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pandas as pd
import structlog

from driftloop.services.training.core import fleet_runs
from driftloop.services.training.core.domain import ModelInfo, Run
from driftloop.services.training.core.drift_wait import first_wait
from driftloop.services.training.core.runs import RunStore
from driftloop.shared import fleet, manifest
from driftloop.shared.errors import InvalidInput, NotReady
from driftloop.shared.objectstore import ObjectStore

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


class DataPinner:
    def __init__(
        self,
        runs: RunStore,
        store: ObjectStore,
        wait: DataWait,
        max_partitions: int = fleet.DEFAULT_MAX_PARTITIONS,
    ) -> None:
        self._runs = runs
        self._store = store
        self._wait = wait
        self._max_partitions = max_partitions
        self._frames = fleet_runs.FleetFrames()

    def grouped(
        self, model: ModelInfo, pinned: manifest.DatasetManifest, since: float | None
    ) -> fleet_runs.GroupedFrame:
        columns = model.spec.partition_by
        return self._frames.get(
            (pinned.key, since, columns),
            lambda: manifest.read_snapshot(self._store, pinned, since=since),
            self._max_partitions,
        )

    async def pin(self, run: Run, model: ModelInfo) -> PinnedData | None:
        """The data to train on; for a drift run, the rows ingested since the drift once there
        are enough of them, or None after putting the run back in the queue to wait."""
        pinned = await asyncio.to_thread(self._latest, model)
        if run.trigger != "drift" or run.data_since is None:
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
        have = await asyncio.to_thread(self._read, pinned, since, model)
        if run.attempt > 1:
            raise InvalidInput(
                f"only {len(have)} of the {wanted} post-drift rows this retry waits for arrived "
                f"within {budget:.0f}s; the episode's retries end here"
            )
        log.warning("drift_data_wait_expired", since=since, rows=len(have), wanted=wanted)
        if len(have) >= model.spec.min_rows:
            return PinnedData(pinned, have, since, now - started)
        frame = await asyncio.to_thread(self._read, pinned, None, model)
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

    def _read(
        self, pinned: manifest.DatasetManifest, since: float | None, model: ModelInfo
    ) -> pd.DataFrame:
        """The snapshot's rows (since `since`); a partition model's own rows only; for a fleet,
        after checking its partition count (DRIFTLOOP_TRAINING_MAX_PARTITIONS)."""
        if model.fleet:
            return self.grouped(model, pinned, since).rows(model.partition)
        if model.spec.partition_by:
            return self.grouped(model, pinned, since).frame
        return manifest.read_snapshot(self._store, pinned, since=since)

    def _rows_since(
        self, pinned: manifest.DatasetManifest, since: float, wanted: int, model: ModelInfo
    ) -> pd.DataFrame | None:
        """Rows ingested at/after `since`, or None while there are fewer than `wanted`."""
        estimate = sum(f.rows for f in pinned.files if f.max_ingested_at >= since)
        if estimate < wanted:  # an upper bound for a partition's rows
            return None
        frame = self._read(pinned, since, model)
        return frame if len(frame) >= wanted else None
