"""Settings of the monitoring service (env prefix DRIFTLOOP_MONITORING_).

One field per DriftPolicy knob, plus how the service talks to the registry.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.monitoring.drift import DriftPolicy
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
    alpha: float = Field(0.001, gt=0, lt=1)
    """Family-wise false-alarm rate per evaluation (Bonferroni: alpha / number of tests)."""
    persistence: int = Field(2, gt=0)
    """Consecutive drifted evaluations needed before a drift episode opens."""
    episode_timeout_s: float = Field(600.0, gt=0)
    """An open episode with no deployment since may fire again after this many seconds."""
    registry_timeout_s: float = Field(5.0, gt=0)
    """Deadline of each registry call made to load a reference profile."""
    profile_retry_s: float = Field(10.0, gt=0)
    """After failing to load a model's profile, wait this long before trying again."""

    def policy(self) -> DriftPolicy:
        return DriftPolicy(
            window_rows=self.window_rows,
            min_rows=self.min_rows,
            eval_every=self.eval_every,
            alpha=self.alpha,
            persistence=self.persistence,
            episode_timeout_s=self.episode_timeout_s,
        )
