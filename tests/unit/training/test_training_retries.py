"""Drift episodes decide with the data the decision needs: the first wait's size and reason, runs
that wait without holding the worker, retries on growing windows while the registry's comparison
is inconclusive, and the run table's migration to one run per episode and attempt."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.services.training.core import trainer
from driftloop.services.training.core.domain import Evidence, ModelSpec, Registration, Run
from driftloop.services.training.core.drift_wait import first_wait
from driftloop.services.training.core.executor import RunExecutor
from driftloop.services.training.core.runs import MIGRATIONS, RunStore
from driftloop.shared.objectstore import LocalObjectStore

pytestmark = pytest.mark.unit


def test_the_first_wait_is_what_a_paired_comparison_needs_and_says_why() -> None:
    rows, why = first_wait(ModelSpec(), floor=500)
    assert 900 < rows < 1200
    assert f"{rows} post-drift rows" in why and "0.030" in why and "95%" in why
    small, why_small = first_wait(replace(ModelSpec(), window_rows=600), floor=500)
    assert small == 600 and "capped by window_rows 600" in why_small
    easy, _ = first_wait(replace(ModelSpec(), evidence=Evidence(min_improvement=0.2)), 300)
    assert easy == 300  # a big effect needs few rows: the floor applies


def test_retries_are_one_run_per_episode_and_attempt(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    first = runs.queue("m", "drift", episode_id="ep-1")
    assert first is not None and first.attempt == 1
    assert runs.queue("m", "drift", episode_id="ep-1") is None
    retry = runs.queue("m", "drift", episode_id="ep-1", attempt=2, wait_rows=2000)
    assert retry is not None and (retry.attempt, retry.wait_rows) == (2, 2000)
    assert runs.queue("m", "drift", episode_id="ep-1", attempt=2) is None
    # a newer episode of the model supersedes the queued retry of the older one
    newer = runs.queue("m", "drift", episode_id="ep-2")
    assert newer is not None
    cancelled = runs.get(retry.run_id)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert "superseded by drift episode ep-2" in cancelled.error
    assert runs.get(first.run_id).state == "queued"  # type: ignore[union-attr]


def test_a_run_waiting_for_data_lets_other_runs_go_first(tmp_path: Path) -> None:
    runs = RunStore(tmp_path / "runs.db")
    waiting = runs.queue("m", "drift", episode_id="ep-1")
    other = runs.queue("n", "manual")
    assert waiting is not None and other is not None
    claimed = runs.claim_next()
    assert claimed is not None and claimed.run_id == waiting.run_id
    started = time.time()
    runs.defer(waiting.run_id, started + 3600, "waiting for data (10/1000 ...)", started)
    claimed = runs.claim_next()
    assert claimed is not None and claimed.run_id == other.run_id
    assert runs.claim_next() is None  # the waiting run is not due yet
    deferred = runs.get(waiting.run_id)
    assert deferred is not None and deferred.state == "queued"
    assert deferred.wait_started_at == pytest.approx(started)
    runs.defer(waiting.run_id, 0.0, "waiting", started + 5)  # due now; the start stays
    again = runs.claim_next()
    assert again is not None and again.wait_started_at == pytest.approx(started)


def test_the_migration_keeps_old_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO runs (run_id, model, state, trigger, episode_id, correlation_id,"
        " causation_id, created_at) VALUES ('r1', 'm', 'succeeded', 'drift', 'ep-0', 'c', '', 1)"
    )
    conn.close()
    runs = RunStore(path)
    old = runs.get("r1")
    assert old is not None and (old.attempt, old.episode_id, old.state) == (1, "ep-0", "succeeded")
    assert runs.queue("m", "drift", episode_id="ep-0", attempt=2) is not None


def executor(tmp_path: Path) -> tuple[RunExecutor, RunStore]:
    runs = RunStore(tmp_path / "runs.db")
    store = LocalObjectStore(tmp_path / "objects")
    return RunExecutor(runs, store, registry=None), runs  # type: ignore[arg-type]


def drift_run(runs: RunStore, attempt: int = 1) -> Run:
    run = runs.queue(
        "m", "drift", episode_id="ep-1", data_since=100.0, attempt=attempt, correlation_id="c"
    )
    assert run is not None
    return run


def registration(outcome: str, rows_needed: int = 0, attention: str = "") -> Registration:
    promoted = outcome == "promoted"
    return Registration("2", promoted, "why", {}, outcome, rows_needed, attention)


def test_an_inconclusive_attempt_retries_on_a_larger_window(tmp_path: Path) -> None:
    ex, runs = executor(tmp_path)
    run = drift_run(runs)
    retry = ex._retry_if_undecided(run, ModelSpec(), registration("inconclusive", 900), 1000)
    assert retry is not None and retry.attempt == 2 and retry.episode_id == "ep-1"
    assert retry.wait_rows == 2000  # double, capped by window_rows 2000
    assert retry.correlation_id == "c" and retry.data_since == 100.0
    assert "attempt 1 was inconclusive on 1000 rows" in retry.wait_reason
    assert "retry 2/4 of drift episode ep-1" in retry.reason
    # the registry's estimate wins when it asks for more than double
    other = replace(run, attempt=2)
    spec = replace(ModelSpec(), window_rows=10_000)
    third = ex._retry_if_undecided(other, spec, registration("inconclusive", 5000), 2000)
    assert third is not None and third.wait_rows == 5000


def test_a_promotion_on_a_partial_window_keeps_improving(tmp_path: Path) -> None:
    """A candidate promoted on 1000 post-drift rows is followed by one on 2000 that must beat
    it (a gradual drift's first model is fitted on a mixture)."""
    ex, runs = executor(tmp_path)
    reg = registration("promoted", attention="both fail the floor")
    retry = ex._retry_if_undecided(drift_run(runs), ModelSpec(), reg, 1000)
    assert retry is not None and retry.wait_rows == 2000


@pytest.mark.parametrize(
    "outcome, attempt, rows",
    [
        ("promoted", 1, 2000),  # promoted on a full window: nothing more to gain
        ("rejected", 1, 1000),  # the champion is as good
        ("waiting", 1, 1000),  # approval or shadow mode: people or live labels decide
        ("inconclusive", 4, 1000),  # max_attempts spent
        ("inconclusive", 1, 2000),  # the window is at window_rows already
    ],
)
def test_no_retry_once_decided_or_exhausted(
    tmp_path: Path, outcome: str, attempt: int, rows: int
) -> None:
    ex, runs = executor(tmp_path)
    run = drift_run(runs, attempt)
    assert ex._retry_if_undecided(run, ModelSpec(), registration(outcome, 500), rows) is None


def test_a_drift_window_is_scored_out_of_fold_against_the_champion() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.normal(size=(n, 2))
    label = np.where(x[:, 0] - x[:, 1] > 0, "yes", "no")
    window = pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "y": label, "_ingested_at": np.arange(n, dtype=float)}
    )
    old = window.assign(y=np.where(x[:, 0] + x[:, 1] > 0, "yes", "no"))  # the old concept
    champion = trainer.train_candidate("m", old, "y", ModelSpec()).pipeline
    result = trainer.train_candidate("m", window, "y", ModelSpec(), champion, cross_validate=True)
    assert result.evaluation == trainer.CROSS_VALIDATED and result.holdout_rows == n
    assert result.training_rows == n
    c = result.comparison
    assert c is not None and c.rows == n and c.lower > 0.2 and c.p_value < 1e-6
    assert c.candidate == pytest.approx(result.metrics["accuracy"])
    assert c.champion == pytest.approx(result.champion_metrics["accuracy"])
    # a holdout evaluation compares on the newest fifth only
    held = trainer.train_candidate("m", window, "y", ModelSpec(), champion)
    assert held.evaluation == trainer.HOLDOUT and held.comparison is not None
    assert held.comparison.rows == 200
