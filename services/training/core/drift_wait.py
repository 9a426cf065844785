"""How many post-drift rows a drift run waits for, and why: what a paired comparison needs to
see the policy's min_improvement (driftloop.shared.paired.rows_needed), assumed before any
candidate is scored and, for a regressor's retries, worked out from the spread observed."""

from __future__ import annotations

from driftloop.services.training.core import tasks, trainer
from driftloop.services.training.core.domain import ModelSpec
from driftloop.shared.paired import (
    ASSUMED_DISCORDANCE,
    ASSUMED_SPREAD,
    PairedComparison,
    rows_needed,
)


def first_wait(spec: ModelSpec, floor: int) -> tuple[int, str]:
    """Post-drift rows a drift run's first attempt waits for, and why: what a cross-validated
    paired comparison needs to see an improvement of min_improvement (capped by window_rows).
    Before any candidate is scored, it assumes a discordance (classification) or a spread of
    the per-row error reduction (regression)."""
    e = spec.evidence
    regression = tasks.is_regression(spec.task)
    needed = rows_needed(
        e.min_improvement,
        e.margin,
        discordance=ASSUMED_DISCORDANCE,
        confidence=e.confidence,
        power=e.power,
        spread=ASSUMED_SPREAD if regression else None,
    )
    rows = min(spec.window_rows, max(floor, needed))
    assumed = (
        f"the per-row spread of the relative {spec.policy_metric} reduction is {ASSUMED_SPREAD:.2f}"
        if regression
        else f"{ASSUMED_DISCORDANCE:.0%} of rows are discordant"
    )
    why = (
        f"{rows} post-drift rows: a paired comparison (one-sided {e.confidence:.0%}, power "
        f"{e.power:.0%}) sees an improvement of {e.min_improvement:.3f} over the margin "
        f"{e.margin:.3f} in about {needed} rows when {assumed} (assumed before any candidate "
        "is scored)"
    )
    if rows < needed:
        why += f"; capped by window_rows {spec.window_rows}"
    return rows, why


def observed_need(spec: ModelSpec, comparison: PairedComparison | None) -> tuple[int, str]:
    """Regression: the rows a paired comparison needs to see min_improvement with the spread
    of the per-row error reduction this attempt observed, and how that was worked out; (0, "")
    for classification or without a comparison (the registry's rows_needed decides then)."""
    if not tasks.is_regression(spec.task) or comparison is None or comparison.spread <= 0:
        return 0, ""
    e = spec.evidence
    needed = rows_needed(
        e.min_improvement,
        e.margin,
        confidence=e.confidence,
        power=e.power,
        spread=comparison.spread,
    )
    return needed, (
        f"about {needed} with the observed spread {comparison.spread:.2f} of the per-row "
        f"relative {comparison.metric} reduction"
    )


USABLE_ROWS_PER_FOLD = 10
"""Rows each of a cross-validated evaluation's folds scores, at least, on a short window."""


def usable_rows(spec: ModelSpec) -> tuple[int, str]:
    """The fewest post-drift rows a drift run trains on when its wait ends with fewer than it
    waited for, and why: a quarter of min_rows, and at least USABLE_ROWS_PER_FOLD rows in each
    of the cross-validation's folds (so every fold is fitted on four times that); never more
    than min_rows. So few rows can only show a large improvement, which is what a drift that
    hurt the model leaves; when the comparison is inconclusive the episode retries on twice the
    rows (executor._retry_if_undecided). Training on the partition's or the dataset's whole
    window instead would fit mostly pre-drift rows: a model barely better than the stale one."""
    floor = trainer.FOLDS * USABLE_ROWS_PER_FOLD
    rows = min(spec.min_rows, max(floor, -(-spec.min_rows // 4)))
    rows = max(rows, 1)
    seen = _detectable(spec, rows)
    why = (
        f"at least {rows} post-drift rows (the larger of a quarter of min_rows {spec.min_rows} "
        f"and {USABLE_ROWS_PER_FOLD} rows in each of {trainer.FOLDS} folds, at most min_rows)"
    )
    if seen:
        why += (
            f", which show an improvement of about {seen:.0%} in {spec.policy_metric} under "
            "the first wait's assumptions"
        )
    return rows, why


def _detectable(spec: ModelSpec, rows: int) -> float:
    """The smallest improvement (in steps of 1%) a paired comparison on `rows` rows sees with
    the first wait's assumptions; 0 when none would be seen."""
    e = spec.evidence
    regression = tasks.is_regression(spec.task)
    # a classifier's improvement in accuracy cannot exceed the share of discordant rows
    largest = 100 if regression else int(ASSUMED_DISCORDANCE * 100)
    for step in range(1, largest + 1):
        delta = step / 100
        needed = rows_needed(
            delta,
            e.margin,
            discordance=ASSUMED_DISCORDANCE,
            confidence=e.confidence,
            power=e.power,
            spread=ASSUMED_SPREAD if regression else None,
        )
        if needed <= rows:
            return delta
    return 0.0
