"""The training run table in SQLite: queue, claim, finish; idempotent by drift episode and
attempt, and by schedule slot.

WAL mode and PRAGMA user_version migrations, like the registry. Calls come through
asyncio.to_thread, so one connection is shared behind a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from driftloop.services.training.core.domain import Registration, Run
from driftloop.shared.fleet import fleet_of

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
        trigger TEXT NOT NULL, episode_id TEXT UNIQUE, correlation_id TEXT NOT NULL,
        causation_id TEXT NOT NULL, data_since REAL, reason TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, started_at REAL,
        finished_at REAL, registered_version TEXT NOT NULL DEFAULT '',
        promoted INTEGER NOT NULL DEFAULT 0, decision_reason TEXT NOT NULL DEFAULT '',
        metrics_json TEXT NOT NULL DEFAULT '{}', manifest_version INTEGER NOT NULL DEFAULT 0,
        training_rows INTEGER NOT NULL DEFAULT 0, fit_seconds REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_state ON runs(state, created_at);
    CREATE INDEX runs_by_model ON runs(model, created_at)
    """,
    # 2: sample accumulation time, the causing event's time and summary, live progress
    """
    ALTER TABLE runs ADD COLUMN data_wait_seconds REAL NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN caused_at REAL;
    ALTER TABLE runs ADD COLUMN cause_detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN progress TEXT NOT NULL DEFAULT '';
    CREATE INDEX runs_by_correlation ON runs(correlation_id)
    """,
    # 3: the spec version trained, the search's best parameters, the schedule slot (one run each)
    """
    ALTER TABLE runs ADD COLUMN spec_version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN best_params_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE runs ADD COLUMN schedule_slot TEXT;
    CREATE UNIQUE INDEX runs_by_schedule_slot ON runs(schedule_slot)
    """,
    # 4: retries of a drift episode (one run per episode and attempt, so the table is rebuilt
    # without the UNIQUE on episode_id), the rows a run waits for and why, the registry's
    # outcome, and a run waiting for data that does not hold the worker (not_before)
    """
    CREATE TABLE runs_v4 (
        run_id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
        trigger TEXT NOT NULL, episode_id TEXT, correlation_id TEXT NOT NULL,
        causation_id TEXT NOT NULL, data_since REAL, reason TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, started_at REAL,
        finished_at REAL, registered_version TEXT NOT NULL DEFAULT '',
        promoted INTEGER NOT NULL DEFAULT 0, decision_reason TEXT NOT NULL DEFAULT '',
        metrics_json TEXT NOT NULL DEFAULT '{}', manifest_version INTEGER NOT NULL DEFAULT 0,
        training_rows INTEGER NOT NULL DEFAULT 0, fit_seconds REAL NOT NULL DEFAULT 0,
        data_wait_seconds REAL NOT NULL DEFAULT 0, caused_at REAL,
        cause_detail TEXT NOT NULL DEFAULT '', progress TEXT NOT NULL DEFAULT '',
        spec_version INTEGER NOT NULL DEFAULT 0, best_params_json TEXT NOT NULL DEFAULT '{}',
        schedule_slot TEXT, attempt INTEGER NOT NULL DEFAULT 1,
        wait_rows INTEGER NOT NULL DEFAULT 0, wait_reason TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '', not_before REAL, wait_started_at REAL
    );
    INSERT INTO runs_v4 (
        run_id, model, state, trigger, episode_id, correlation_id, causation_id, data_since,
        reason, error, created_at, started_at, finished_at, registered_version, promoted,
        decision_reason, metrics_json, manifest_version, training_rows, fit_seconds,
        data_wait_seconds, caused_at, cause_detail, progress, spec_version, best_params_json,
        schedule_slot
    ) SELECT
        run_id, model, state, trigger, episode_id, correlation_id, causation_id, data_since,
        reason, error, created_at, started_at, finished_at, registered_version, promoted,
        decision_reason, metrics_json, manifest_version, training_rows, fit_seconds,
        data_wait_seconds, caused_at, cause_detail, progress, spec_version, best_params_json,
        schedule_slot
    FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_v4 RENAME TO runs;
    CREATE INDEX runs_by_state ON runs(state, created_at);
    CREATE INDEX runs_by_model ON runs(model, created_at);
    CREATE INDEX runs_by_correlation ON runs(correlation_id);
    CREATE UNIQUE INDEX runs_by_schedule_slot ON runs(schedule_slot);
    CREATE UNIQUE INDEX runs_by_episode_attempt ON runs(episode_id, attempt)
    """,
    # 5: fairness: runs are claimed round-robin across groups (a fleet and its partitions are
    # one group, every other model its own), oldest first within a group
    """
    ALTER TABLE runs ADD COLUMN grp TEXT NOT NULL DEFAULT '';
    UPDATE runs SET grp = model;
    CREATE INDEX runs_by_group ON runs(grp, started_at)
    """,
)
_RUN_FIELDS = {f.name for f in fields(Run)}


class RunStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        current = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            with self._tx() as c:
                for statement in filter(str.strip, script.split(";")):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def queue(
        self,
        model: str,
        trigger: str,
        *,
        episode_id: str | None = None,
        correlation_id: str = "",
        causation_id: str = "",
        data_since: float | None = None,
        reason: str = "",
        only_if_no_runs: bool = False,
        caused_at: float | None = None,
        cause_detail: str = "",
        schedule_slot: str | None = None,
        attempt: int = 1,
        wait_rows: int = 0,
        wait_reason: str = "",
    ) -> Run | None:
        """Queue a run; None when the episode already has this attempt or the schedule slot
        already has a run (or, with only_if_no_runs, when the model has any run). An empty
        correlation id becomes the run id. The first attempt of a new drift episode cancels the
        queued retries of the model's older episodes: the newer evidence replaces theirs."""
        run_id = uuid.uuid4().hex
        with self._tx() as c:
            if (
                episode_id is not None
                and c.execute(
                    "SELECT 1 FROM runs WHERE episode_id = ? AND attempt = ?", (episode_id, attempt)
                ).fetchone()
            ):
                return None
            if (
                schedule_slot is not None
                and c.execute(
                    "SELECT 1 FROM runs WHERE schedule_slot = ?", (schedule_slot,)
                ).fetchone()
            ):
                return None
            if episode_id is not None and attempt == 1:
                c.execute(
                    "UPDATE runs SET state = 'cancelled', finished_at = ?, progress = '',"
                    " error = ? WHERE model = ? AND state = 'queued' AND attempt > 1"
                    " AND episode_id != ?",
                    (time.time(), f"superseded by drift episode {episode_id}", model, episode_id),
                )
            if (
                only_if_no_runs
                and c.execute("SELECT 1 FROM runs WHERE model = ?", (model,)).fetchone()
            ):
                return None
            c.execute(
                "INSERT INTO runs (run_id, model, state, trigger, episode_id, correlation_id,"
                " causation_id, data_since, reason, created_at, caused_at, cause_detail,"
                " schedule_slot, attempt, wait_rows, wait_reason, grp)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    model,
                    "queued",
                    trigger,
                    episode_id,
                    correlation_id or run_id,
                    causation_id,
                    data_since,
                    reason,
                    time.time(),
                    caused_at,
                    cause_detail,
                    schedule_slot,
                    attempt,
                    wait_rows,
                    wait_reason,
                    fleet_of(model),
                ),
            )
            return _run(c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())

    def requeue_interrupted(self) -> int:
        """Runs left "running" by a killed process go back to the queue (redone from scratch)."""
        with self._tx() as c:
            return c.execute(
                "UPDATE runs SET state = 'queued', started_at = NULL, progress = ''"
                " WHERE state = 'running'"
            ).rowcount

    def claim_next(self) -> Run | None:
        """Mark the next queued run running and return it (a run waiting for data only once
        its not_before time has come): from the group that started a run longest ago, so a
        fleet's thousand partition runs take turns with every other model's runs; the oldest
        within the group."""
        with self._tx() as c:
            row = c.execute(
                "SELECT r.run_id FROM runs r WHERE r.state = 'queued'"
                " AND (r.not_before IS NULL OR r.not_before <= ?)"
                " ORDER BY COALESCE((SELECT MAX(s.started_at) FROM runs s WHERE s.grp = r.grp),"
                " 0), r.created_at, r.rowid LIMIT 1",
                (time.time(),),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE runs SET state = 'running', started_at = ?, error = '' WHERE run_id = ?",
                (time.time(), row["run_id"]),
            )
            return _run(c.execute("SELECT * FROM runs WHERE run_id = ?", (row[0],)).fetchone())

    def defer(self, run_id: str, not_before: float, progress: str, wait_started_at: float) -> None:
        """Put a run that waits for data back in the queue until `not_before`, so the worker
        goes on with other runs meanwhile."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET state = 'queued', not_before = ?, progress = ?,"
                " wait_started_at = COALESCE(wait_started_at, ?) WHERE run_id = ?",
                (not_before, progress, wait_started_at, run_id),
            )

    def defer_many(self, current: str, waits: list[tuple[str, float, str, float]]) -> list[str]:
        """`defer` for many runs in one transaction: (run_id, not_before, progress,
        wait_started_at) each. `current` is the run the caller holds; any other is changed only
        while it is queued (one another worker holds, or one that ended, is left alone). Returns
        the run ids left alone."""
        left = []
        with self._tx() as c:
            for run_id, not_before, progress, started in waits:
                done = c.execute(
                    "UPDATE runs SET state = 'queued', not_before = ?, progress = ?,"
                    " wait_started_at = COALESCE(wait_started_at, ?)"
                    " WHERE run_id = ? AND (state = 'queued' OR run_id = ?)",
                    (not_before, progress, started, run_id, current),
                )
                if not done.rowcount:
                    left.append(run_id)
        return left

    def requeue(self, run_id: str, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET state = 'queued', error = ?, progress = '' WHERE run_id = ?",
                (error, run_id),
            )

    def record_data(
        self,
        run_id: str,
        manifest_version: int,
        training_rows: int,
        best_params: dict[str, str] | None = None,
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET manifest_version = ?, training_rows = ?, best_params_json = ?"
                " WHERE run_id = ?",
                (manifest_version, training_rows, json.dumps(best_params or {}), run_id),
            )

    def record_spec(self, run_id: str, spec_version: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET spec_version = ? WHERE run_id = ?", (spec_version, run_id))

    def has_slot(self, schedule_slot: str) -> bool:
        with self._tx() as c:
            found = c.execute("SELECT 1 FROM runs WHERE schedule_slot = ?", (schedule_slot,))
            return found.fetchone() is not None

    def schedule_state(self, model: str) -> tuple[bool, int]:
        """(whether a run of `model` is queued or running, the newest manifest version any of
        its runs trained on)."""
        with self._tx() as c:
            row = c.execute(
                "SELECT COALESCE(MAX(state IN ('queued', 'running')), 0),"
                " COALESCE(MAX(manifest_version), 0) FROM runs WHERE model = ?",
                (model,),
            ).fetchone()
        return bool(row[0]), int(row[1])

    def record_progress(self, run_id: str, progress: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET progress = ? WHERE run_id = ?", (progress, run_id))

    def record_wait(self, run_id: str, rows: int, reason: str) -> None:
        """The post-drift rows a run waits for, and why that many."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET wait_rows = ?, wait_reason = ? WHERE run_id = ?",
                (rows, reason, run_id),
            )

    def add_reason(self, run_id: str, note: str) -> None:
        """Append `note` to the run's reason (once: a requeued run that notes it again does not
        repeat it)."""
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET reason = CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ?"
                " END WHERE run_id = ? AND instr(reason, ?) = 0",
                (note, note, run_id, note),
            )

    def record_data_wait(self, run_id: str, seconds: float) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET data_wait_seconds = ? WHERE run_id = ?", (seconds, run_id))

    def succeed(self, run_id: str, reg: Registration, fit_seconds: float) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET state = 'succeeded', finished_at = ?, registered_version = ?,"
                " promoted = ?, decision_reason = ?, metrics_json = ?, fit_seconds = ?,"
                " outcome = ?, error = '', progress = '' WHERE run_id = ?",
                (
                    time.time(),
                    reg.version,
                    int(reg.promoted),
                    reg.decision_reason,
                    json.dumps(reg.metrics, sort_keys=True),
                    fit_seconds,
                    reg.outcome or ("promoted" if reg.promoted else "rejected"),
                    run_id,
                ),
            )

    def fail(self, run_id: str, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET state = 'failed', finished_at = ?, error = ?, progress = ''"
                " WHERE run_id = ?",
                (time.time(), error, run_id),
            )

    def get(self, run_id: str) -> Run | None:
        with self._tx() as c:
            row = c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _run(row)

    def list(self, model: str = "", limit: int = 50, correlation_id: str = "") -> list[Run]:
        sql, args = "SELECT * FROM runs WHERE 1=1", list[Any]()
        for column, value in (("model", model), ("correlation_id", correlation_id)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with self._tx() as c:
            return [_run(r) for r in c.execute(sql, [*args, limit]).fetchall()]


def _run(row: sqlite3.Row) -> Run:
    values: dict[str, Any] = {k: row[k] for k in row.keys() if k in _RUN_FIELDS}
    values["metrics"] = json.loads(row["metrics_json"])
    values["promoted"] = bool(row["promoted"])
    values["best_params"] = json.loads(row["best_params_json"])
    return Run(**values)
