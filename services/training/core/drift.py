"""A drift episode as training sees it: the model and episode to retrain for, the rows to train
on, and one line of evidence kept on the run (the bus forgets the event)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureDrift:
    """The monitor's test of one feature or output."""

    feature: str
    test: str
    p_value: float
    drifted: bool


@dataclass(frozen=True)
class DriftTrigger:
    """A DriftDetected event, with the ids of the event that carried it."""

    model: str
    version: str
    episode_id: str
    correlation_id: str
    causation_id: str
    occurred_at: float
    window_end: float | None
    """When the monitor's window of live rows ended (None when the event does not say)."""
    features: tuple[FeatureDrift, ...] = ()
    drift_share: float = 0.0
    live_rows: int = 0
    reference_rows: int = 0
    partitions: tuple[str, ...] = ()
    """A fleet episode: the partition models that drifted together with the fleet."""

    @property
    def data_since(self) -> float | None:
        """Train on rows that arrived after this (None: no bound)."""
        # why: the window itself still holds rows from before the change; mixing them in gives
        # a model of neither regime, which the monitor then flags as drifted again
        return self.window_end

    def summary(self) -> str:
        """One line of evidence kept on the run, so a trace can show it after the bus forgot it."""
        hits = [f"{f.feature} {f.test} p={f.p_value:.1e}" for f in self.features if f.drifted]
        return (
            f"{', '.join(hits) or 'no single feature'} drifted; share {self.drift_share:.2f}; "
            f"window of {self.live_rows} live rows vs {self.reference_rows} reference rows "
            f"(version {self.version})"
        )
