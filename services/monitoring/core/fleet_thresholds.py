"""False-alarm control across a fleet: each partition monitor's thresholds are its policy's
divided among the fleet's N partitions (Bonferroni), so the whole fleet expects about as many
false alarms in a stationary day as one monitor of an average partition.

Why a per-monitor rate multiplies, and the bound. Every detector of a monitor has a false-alarm
rate per row of stationary traffic, fixed by its policy:
- feature and prediction tests: one evaluation every `eval_every` rows; at each, the chance that
  any column's test fires is at most `alpha` (Bonferroni over the tested columns, drift.py), and
  a decision also needs `persistence` consecutive firing evaluations, so at most
  alpha / eval_every decisions per logged row;
- the label test (label prior, a regressor's target KS): the same, per labelled row;
- the error-rate bank (CUSUMs and the GLR, error_detectors.py, abs_error_cusum.py,
  sequential.py): thresholds set for an in-control average run length of `error_arl0_rows`
  labelled rows (Siegmund's approximation; the GLR calibrated by simulation, calibration.py),
  1 / error_arl0_rows alarms per labelled row.
So one monitor's expected false alarms over a day of R logged and L labelled rows are at most
    FA(R, L) = alpha (R + L) / eval_every + L / error_arl0_rows          (`daily_false_alarms`)
and N partition monitors with the same policy expect up to the sum of theirs, N times one
partition's: 16,000 monitors turn a rare false alarm into hundreds a day.

What a partition monitor gets instead (`fleet_policy`): alpha / N, error_arl0_rows x N and
adwin_delta / N. Summed over the partitions (R_F, L_F the fleet's daily rows and labels),
    sum_p FA_p <= (alpha / N) (R_F + L_F) / eval_every + L_F / (N error_arl0_rows)
              = FA(R_F / N, L_F / N),
the bound of ONE monitor carrying the average partition's traffic at the unscaled policy. At the
defaults (alpha 1e-4, eval_every 50, error_arl0_rows 1e7) that is 2.1e-6 per row and label: below
one false alarm per stationary day while the average partition logs and labels fewer than about
470,000 rows a day (5 a second), whatever N is. The fleet's own monitor (rows its global model
answered) keeps the unscaled policy and adds its own FA. ADWIN's delta is divided too (its
threshold grows with ln(1 / delta)); its false alarms are measured, not bounded
(`driftloop bench drift`), as for any model.

N is the fleet's partition count: the registry's (`ListModels(fleet=F)`, asked at most every
`refresh_s`) or the partitions monitored here, whichever is larger, rounded up to a power of two
so that thresholds only move when the fleet doubles (at most 2x stricter than N itself). When N
moves, the monitors already built take the new alpha at once (feature and label tests read it at
each evaluation); their sequential detectors keep their thresholds until the next deployment
resets them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog

from driftloop.services.monitoring.core.drift import DriftPolicy
from driftloop.services.monitoring.core.fleet import fleet_of
from driftloop.shared.errors import DriftloopError

log = structlog.get_logger(__name__)


def fleet_policy(policy: DriftPolicy, partitions: int) -> DriftPolicy:
    """`policy` with its false-alarm budget shared among `partitions` monitors (Bonferroni)."""
    n = max(1, partitions)
    if n == 1:
        return policy
    return policy.model_copy(
        update={
            "alpha": policy.alpha / n,
            "error_arl0_rows": policy.error_arl0_rows * n,
            "adwin_delta": policy.adwin_delta / n,
        }
    )


def daily_false_alarms(policy: DriftPolicy, rows: float, labels: float) -> float:
    """Upper bound of one monitor's expected false alarms over a stationary day of `rows` logged
    and `labels` labelled rows (see the module docstring; ADWIN aside)."""
    return policy.alpha * (rows + labels) / policy.eval_every + labels / policy.error_arl0_rows


def fleet_daily_false_alarms(
    policy: DriftPolicy, partitions: int, rows: Iterable[float], labels: Iterable[float]
) -> float:
    """The same bound summed over a fleet's partition monitors (their rows and labels per day),
    each with `fleet_policy(policy, partitions)`."""
    scaled = fleet_policy(policy, divisor(partitions))
    return sum(daily_false_alarms(scaled, r, n) for r, n in zip(rows, labels, strict=True))


def divisor(partitions: int) -> int:
    """N rounded up to a power of two (thresholds move only when a fleet doubles)."""
    n = max(1, partitions)
    return 1 << math.ceil(math.log2(n))


class PartitionCounts(Protocol):
    """How many partition models a fleet has (adapters/registry.py: ListModels(fleet=F)).
    Raises a DriftloopError (Unavailable, NotFound ...) when it cannot tell."""

    async def partition_count(self, fleet: str) -> int: ...


class FleetSizes:
    """Each fleet's partition count N, and the policy of each partition monitor (`scale`)."""

    def __init__(
        self,
        counts: PartitionCounts | None = None,
        *,
        refresh_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counts = counts
        self._refresh_s = refresh_s
        self._clock = clock
        self._registered: dict[str, int] = {}
        self._asked_at: dict[str, float] = {}
        self._seen: dict[str, set[str]] = {}
        self._divisors: dict[str, int] = {}

    def saw(self, partition: str) -> bool:
        """A partition of a fleet is monitored here; True when the fleet's divisor moved."""
        fleet = fleet_of(partition)
        if fleet is None:
            return False
        seen = self._seen.setdefault(fleet, set())
        if partition in seen:
            return False
        seen.add(partition)
        return self._moved(fleet)

    def monitored(self, fleet: str) -> list[str]:
        """The fleet's partitions monitored here."""
        return sorted(self._seen.get(fleet, ()))

    def monitored_count(self, fleet: str) -> int:
        return len(self._seen.get(fleet, ()))

    def size(self, fleet: str) -> int:
        """N: the registry's partition count or the partitions monitored, whichever is larger."""
        return max(self._registered.get(fleet, 0), len(self._seen.get(fleet, ())), 1)

    def divisor(self, fleet: str) -> int:
        return divisor(self.size(fleet))

    async def refresh(self, fleet: str) -> bool:
        """Ask the registry for the fleet's partition count, at most every `refresh_s` (not
        fatal when it cannot answer: the partitions monitored here count). True when the
        fleet's divisor moved."""
        now = self._clock()
        if self._counts is None or now < self._asked_at.get(fleet, -math.inf) + self._refresh_s:
            return False
        self._asked_at[fleet] = now
        try:
            self._registered[fleet] = await self._counts.partition_count(fleet)
        except DriftloopError as exc:
            log.warning("fleet_size_unknown", fleet=fleet, error=str(exc))
            return False
        return self._moved(fleet)

    def _moved(self, fleet: str) -> bool:
        found = self.divisor(fleet)
        if self._divisors.get(fleet) == found:
            return False
        self._divisors[fleet] = found
        log.info("fleet_thresholds", fleet=fleet, partitions=self.size(fleet), divisor=found)
        return True

    def scale(self, model: str, policy: DriftPolicy) -> DriftPolicy:
        """The policy of `model`'s monitor: a partition's is shared among its fleet's N."""
        fleet = fleet_of(model)
        return policy if fleet is None else fleet_policy(policy, self.divisor(fleet))
