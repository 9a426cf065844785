"""What the monitor decides: a drift decision (published as DriftDetected) and the episode it
opens, with one line of plain words per reason. Plain data, shared by the monitor, the event
handler, history and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftloop.services.monitoring.core.drift import FeatureDrift
from driftloop.shared.profile import PREDICTION


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
    reasons: tuple[str, ...] = ()
    """Why, in words: one line per drifted test (see `explain`)."""
    partitions: tuple[tuple[str, str], ...] = ()
    """A fleet episode (`model` is the fleet): the (partition model, version) pairs that drifted
    together (core/fleet_episodes.py); empty for one model's decision."""


@dataclass(frozen=True)
class DriftEpisode:
    """An open drift episode: from its decision until the next deployment (or its timeout)."""

    episode_id: str
    opened_at: float


DETECTORS = {
    "cusum": "error-rate CUSUM",
    "glr": "error-rate GLR",
    "abs_error_cusum": "absolute-error CUSUM",
    "abs_error_glr": "GLR of the share of errors above the reference MAE",
}


def explain(evidence: tuple[FeatureDrift, ...]) -> tuple[str, ...]:
    """One line per drifted test, naming its figures: "MAE 14.2 vs reference 10.1 (RMSE ...)"
    for a regressor's error detectors, "accuracy 0.71 vs reference 0.90" for a classifier's."""
    by_name = {f.feature: f for f in evidence}
    lines = []
    for f in evidence:
        if not f.drifted:
            continue
        if f.test in ("ks", "chi2"):
            lines.append(_distribution(f))
        elif f.test in ("label_prior", "label_ks"):
            what = "target (label) distribution" if f.test == "label_ks" else "label distribution"
            lines.append(f"{what} changed: {_test(f)}")
        elif f.test.startswith("abs_error"):
            lines.append(f"{_residuals(by_name)}; {_detector(f)}")
        elif f.test in ("cusum", "glr", "adwin"):
            lines.append(f"{_accuracy(by_name)}; {_detector(f)}")
    return tuple(lines)


def _distribution(f: FeatureDrift) -> str:
    what = "predictions" if f.feature == PREDICTION else f"feature {f.feature!r}"
    return f"{what} drifted: {_test(f)}"


def _test(f: FeatureDrift) -> str:
    name = {"ks": "KS D", "label_ks": "KS D"}.get(f.test, "chi-squared")
    return f"{name} {f.statistic:.3g}, p={f.p_value:.2g} < {f.threshold:.2g}"


def _residuals(by_name: dict[str, FeatureDrift]) -> str:
    mae, rmse = by_name.get("_mae"), by_name.get("_rmse")
    if mae is None:
        return "absolute errors rose"
    line = f"MAE {mae.statistic:.3g} vs reference {mae.threshold:.3g}"
    if rmse is not None:
        line += f" (RMSE {rmse.statistic:.3g} vs {rmse.threshold:.3g})"
    return f"{line} on the latest labelled rows"


def _accuracy(by_name: dict[str, FeatureDrift]) -> str:
    accuracy = by_name.get("_accuracy")
    if accuracy is None:
        return "error rate rose"
    return f"accuracy {accuracy.statistic:.3g} vs reference {accuracy.threshold:.3g}"


def _detector(f: FeatureDrift) -> str:
    if f.test.endswith("adwin"):
        share = "share of errors above the reference MAE" if f.test != "adwin" else "error rate"
        return (
            f"ADWIN: {share} rose from {f.threshold:.3g} to {f.statistic:.3g} "
            f"(delta {f.p_value:.2g})"
        )
    return f"{DETECTORS.get(f.test, f.test)} {f.statistic:.3g} crossed {f.threshold:.3g}"
