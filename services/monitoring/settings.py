"""Settings of the monitoring service (env prefix DRIFTLOOP_MONITORING_).

One field per DriftPolicy knob (the default policy), per-model overrides of any of them, plus
how the service talks to the registry.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.monitoring.core.drift import DriftPolicy, Signal
from driftloop.services.monitoring.core.fleet_episodes import FleetEpisodeRules
from driftloop.shared.settings import ServiceSettings


class MonitoringSettings(ServiceSettings):
    """How the monitor windows, tests and debounces live predictions."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_MONITORING_", env_nested_delimiter="__", extra="forbid"
    )

    window_rows: int = Field(300, gt=0)
    """Size of the live window: the most recent N prediction rows of the current version."""
    min_rows: int = Field(200, gt=0)
    """Rows of the current version needed before the first evaluation (also the cool-down after
    a deployment)."""
    eval_every: int = Field(50, gt=0)
    """Evaluate the window every N rows once min_rows were seen."""
    alpha: float = Field(0.0001, gt=0, lt=1)
    """Family-wise false-alarm rate per evaluation (Bonferroni: alpha / number of tests)."""
    persistence: int = Field(2, gt=0)
    """Consecutive drifted evaluations needed before a drift episode opens."""
    episode_timeout_s: float = Field(600.0, gt=0)
    """An open episode with no deployment since may fire again after this many seconds."""
    window_seconds: float | None = Field(None, gt=0)
    """Also bound the live window by time: only rows logged within this many seconds of the
    newest one are tested (None: by count only). Too few rows left means no evaluation."""
    label_window_rows: int = Field(500, gt=0)
    """Labelled rows behind the live accuracy figure and the label-prior test."""
    label_burn_in_rows: int = Field(1000, gt=0)
    """When the reference profile has no held-out accuracy and label frequencies, the first
    this-many labelled rows after a deployment become the performance reference."""
    error_shift: float = Field(0.1, gt=0, lt=1)
    """Increase of the error rate (absolute) the error-rate CUSUM is tuned to catch fastest."""
    error_arl0_rows: float = Field(1e7, gt=1)
    """Average labelled rows between false error-rate alarms; sets the CUSUM threshold."""
    mae_shift: float = Field(0.2, gt=0)
    """Regressors: relative rise of the MAE (0.2 = 20% above the reference's) the absolute-error
    CUSUM is tuned to catch fastest; its false alarms share error_arl0_rows."""
    adwin_delta: float = Field(0.002, ge=0, lt=1)
    """Confidence of river's ADWIN on the live error stream (a member of the error-rate bank;
    smaller = fewer false cuts, later detection; 0 turns it off). Its false alarms are not part
    of error_arl0_rows' budget: `driftloop bench drift` measures them."""
    max_pending_predictions: int = Field(200_000, gt=0)
    """Logged predictions kept per model for labels to join (oldest forgotten first)."""
    triggers: tuple[Signal, ...] = ("features", "prediction", "accuracy", "label_prior")
    """Signals that may open a drift episode (and so a retrain): features, prediction,
    accuracy (for a regressor: its absolute-error detectors), label_prior (for a regressor: the
    KS test of its labels). The others are still tested and reported."""
    model_policies: dict[str, dict[str, Any]] = {}
    """Per-model overrides of the fields above, e.g.
    DRIFTLOOP_MONITORING_MODEL_POLICIES='{"churn": {"alpha": 0.0001, "triggers": ["accuracy"]}}'.
    A fleet's entry applies to its partitions (whose false-alarm budget is then shared)."""
    registry_timeout_s: float = Field(5.0, gt=0)
    """Deadline of each registry call made to load a reference profile."""
    profile_retry_s: float = Field(10.0, gt=0)
    """After failing to load a model's profile, wait this long before trying again."""
    shadow_report_every: int = Field(50, gt=0)
    """Shadow mode: report live evidence (shadow vs production on the same labelled requests)
    to the registry every this many new labelled pairs; the registry decides."""
    shadow_max_pending: int = Field(100_000, gt=0)
    """Shadow mode: answers kept per side (shadow, production) for labels to join."""
    fleet_hold_s: float = Field(5.0, ge=0)
    """Fleets: a partition's drift decision waits this long for others of its fleet before it
    is published on its own (DriftDetected for the partition); every isolated partition drift
    is this much later. See services/monitoring/core/fleet_episodes.py."""
    fleet_window_s: float = Field(60.0, gt=0)
    """Fleets: partition drifts of one fleet within this many seconds count together towards a
    fleet episode; during an open fleet episode, later partition drifts are gathered for this
    long and published together."""
    fleet_min_partitions: int = Field(3, ge=2)
    """Fleets: the fewest partitions that make a fleet episode (one DriftDetected for the fleet
    listing them, one coordinated retrain) instead of one drift per partition."""
    fleet_fraction: float = Field(0.1, gt=0, le=1)
    """Fleets: a fleet episode also needs this share of the fleet's monitored partitions to
    drift within fleet_window_s (the quorum is the larger of the two)."""
    fleet_refresh_s: float = Field(600.0, gt=0)
    """Fleets: how often the registry is asked how many partitions a fleet has (N: each
    partition monitor's false-alarm budget is the policy's divided by N, rounded up to a power
    of two; see services/monitoring/core/fleet_thresholds.py)."""
    idle_after_s: float = Field(300.0, gt=0)
    """A monitor that logged no rows for this long has its live window merged into one compact
    frame (the rows it tests are kept)."""

    def policy(self) -> DriftPolicy:
        """The default policy: every model without an entry in model_policies."""
        return DriftPolicy(**{name: getattr(self, name) for name in DriftPolicy.model_fields})

    def fleet_rules(self) -> FleetEpisodeRules:
        """When partition drifts become one fleet episode."""
        return FleetEpisodeRules(
            hold_s=self.fleet_hold_s,
            window_s=self.fleet_window_s,
            min_partitions=self.fleet_min_partitions,
            fraction=self.fleet_fraction,
            episode_s=self.episode_timeout_s,
        )

    def policies(self) -> dict[str, DriftPolicy]:
        """Each model_policies entry over the default policy (validated: unknown keys fail)."""
        default = self.policy().model_dump()
        return {
            model: DriftPolicy.model_validate({**default, **overrides})
            for model, overrides in self.model_policies.items()
        }
