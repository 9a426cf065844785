"""Which way a policy metric is better, and how the policy words it: a floor is a minimum for a
score (accuracy, F1, R²) and a ceiling for an error (MAE, RMSE, MAPE); margins are improvements.

Margins, min_improvement and slice tolerances are all in the unit of Metric.improvement: a plain
difference for a score, the relative error reduction for an error (MAE 9 vs 10 is +0.10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from driftloop.shared.estimators import METRICS, Metric

TOLERANCE = 1e-9
"""Float slack so that e.g. 0.94 + 0.01 counts as reaching 0.95."""


@dataclass(frozen=True)
class Direction:
    """The policy metric with its direction, and the words the policy's reasons use for it."""

    metric: Metric

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def lower_is_better(self) -> bool:
        return not self.metric.higher_is_better

    @property
    def bound(self) -> str:
        """What the policy's `floor` is for this metric."""
        return "ceiling" if self.lower_is_better else "floor"

    @property
    def outside(self) -> str:
        """Where a value failing the bound lies."""
        return "above" if self.lower_is_better else "below"

    @property
    def fail_op(self) -> str:
        return ">" if self.lower_is_better else "<"

    @property
    def unit(self) -> str:
        """Said after a margin when it is not a plain difference."""
        return " (relative error reduction)" if self.lower_is_better else ""

    def improvement(self, candidate: float, champion: float) -> float:
        return self.metric.improvement(candidate, champion)

    def fails(self, value: float, floor: float) -> bool:
        """Whether `value` misses the floor (a ceiling for an error); a floor of 0 is none."""
        if not floor:
            return False
        if self.lower_is_better:
            return value - TOLERANCE > floor
        return value + TOLERANCE < floor

    def failing(self, value: float, floor: float) -> str:
        """'accuracy 0.550 < floor 0.600', 'mae 12.300 > ceiling 10.000'."""
        return f"{self.name} {value:.3f} {self.fail_op} {self.bound} {floor:.3f}"

    def passing(self, value: float, floor: float) -> str:
        """'accuracy 0.900 >= floor 0.600', 'mae 9.000 <= ceiling 10.000'."""
        if not floor:
            return f"{self.name} {value:.3f}, no {self.bound} set"
        op = "<=" if self.lower_is_better else ">="
        return f"{self.name} {value:.3f} {op} {self.bound} {floor:.3f}"

    def against(self, value: float, other: float, margin: float, ok: bool, who: str) -> str:
        """`value` against `other` (`who`'s) and the margin: 'accuracy 0.953 >= champion 0.512
        + margin 0.010' for a score; for an error, its relative reduction against the margin."""
        if not self.lower_is_better:
            return (
                f"{self.name} {value:.3f} {'>=' if ok else '<'} {who} {other:.3f} + margin "
                f"{margin:.3f}"
            )
        gain = self.improvement(value, other)
        return (
            f"{self.name} {value:.3f} vs {who} {other:.3f}: relative error reduction "
            f"{gain:+.3f} {'>=' if ok else '<'} margin {margin:.3f}"
        )


def direction(name: str) -> Direction:
    """The direction of metric `name`; a name outside the catalogue (an old stored policy)
    counts as a score, higher is better, as every metric did before regression."""
    found = METRICS.get(name)
    return Direction(found if found is not None else Metric(name, name, lambda t, p: math.nan))
