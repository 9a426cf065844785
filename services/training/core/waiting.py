"""Runs waiting for data, as their last full poll left them: what each waits for, and the
manifest version it was counted against, so the next polls need neither the registry nor a read.

Why: a fleet episode puts hundreds of partition runs in the queue at once, each waiting for its
post-drift rows and polled every poll_seconds. A full poll (three registry calls, the run store,
the data) took about 5 ms, so 100 waiting runs kept the worker busy polling and 1,000 left no
time for the runs whose rows had arrived. Rows only arrive with a new manifest version: while
the dataset's head is the version a run was counted against, its answer cannot have changed,
and neither can that of any run of the same dataset counted against it, so one poll defers them
all (DataPinner.recheck). A new version recounts a partition's rows in memory. A run past its
wait's deadline, or one whose rows are there, gets the full poll, which reads the model and spec
again before anything is trained (a spec changed during the wait applies from then on).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

MAX_WAITING = 50_000
"""Waiting runs remembered at most (a few hundred bytes each); one forgotten gets a full poll."""


@dataclass(frozen=True)
class WaitFor:
    """What a deferred run waits for: `need` rows (of its partition, for a partition model)
    ingested at/after `since` (None: any), until `deadline` (the full poll decides then)."""

    need: int
    since: float | None
    progress: str
    """The run's progress for a row count, with `{rows}` in its place."""
    poll: float
    """Seconds between polls."""
    deadline: float = math.inf

    def text(self, rows: int) -> str:
        return self.progress.format(rows=rows)


@dataclass(frozen=True)
class Waiting:
    """A deferred run, as its last poll found it."""

    run_id: str
    dataset: str
    partition: str
    """A partition model's COLUMN=VALUE/... suffix ("" for any other model)."""
    partition_by: tuple[str, ...]
    wait: WaitFor
    started: float
    """When its wait started (the run's wait_started_at)."""
    version: int
    """The manifest version its rows were counted in."""
    rows: int
    """Its rows in that version."""

    @property
    def progress(self) -> str:
        return self.wait.text(self.rows)

    def counted(self, version: int, rows: int) -> Waiting:
        return replace(self, version=version, rows=rows)


class WaitingRuns:
    """The waiting runs by run id (thread-safe: two workers poll at once), bounded: the oldest
    entry is dropped beyond `max_runs`."""

    def __init__(self, max_runs: int = MAX_WAITING) -> None:
        self._runs: OrderedDict[str, Waiting] = OrderedDict()
        self._max = max_runs
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, waiting: Waiting) -> None:
        with self._lock:
            self._runs[waiting.run_id] = waiting
            self._runs.move_to_end(waiting.run_id)
            while len(self._runs) > self._max:
                self._runs.popitem(last=False)

    def get(self, run_id: str) -> Waiting | None:
        with self._lock:
            return self._runs.get(run_id)

    def forget(self, *run_ids: str) -> None:
        with self._lock:
            for run_id in run_ids:
                self._runs.pop(run_id, None)

    def of_dataset(self, dataset: str) -> list[Waiting]:
        with self._lock:
            return [w for w in self._runs.values() if w.dataset == dataset]
