"""What the monitor decides: a drift decision (published as DriftDetected) and the episode it
opens. Plain data, shared by the monitor, the event handler, history and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftloop.services.monitoring.core.drift import FeatureDrift


@dataclass(frozen=True)
class DriftDecision:
    """The monitor's decision that a model drifted: what to publish as DriftDetected."""

    model: str
    version: str
    episode_id: str
    features: tuple[FeatureDrift, ...]
    drift_share: float
    window_start: float
    window_end: float
    live_rows: int
    reference_rows: int
    decided_at: float


@dataclass(frozen=True)
class DriftEpisode:
    """An open drift episode: from its decision until the next deployment (or its timeout)."""

    episode_id: str
    opened_at: float
