"""The promotion policy: does a candidate replace the champion? Pure, with the numbers as reason.

The candidate and the champion are scored by training on the same recent holdout (overall and
per declared slice), so their metrics are comparable; the registry applies floor, margin and the
no-regression-on-any-slice rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftloop.services.registry.core.domain import PromotionPolicy, SliceMetric
from driftloop.shared.errors import InvalidInput

_TOLERANCE = 1e-9
"""Float slack so that e.g. 0.94 + 0.01 counts as reaching 0.95."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    """The evidence behind a rejection (e.g. the regressing slices and their numbers)."""


def decide(
    policy: PromotionPolicy,
    metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    slices: tuple[SliceMetric, ...] = (),
    champion_slices: tuple[SliceMetric, ...] = (),
) -> Decision:
    """Promote when the candidate reaches the floor and, if there is a champion (its metrics
    given), beats it by at least the margin without regressing beyond the slice tolerance on any
    slice with enough rows. Raise InvalidInput when a needed metric is missing."""
    name = policy.metric
    if name not in metrics:
        raise InvalidInput(
            f"candidate metrics lack {name!r} (the policy metric); got {sorted(metrics)}"
        )
    score = metrics[name]
    if score + _TOLERANCE < policy.floor:
        return Decision(False, f"{name} {score:.3f} < floor {policy.floor:.3f}")
    if champion_metrics is None:
        return Decision(True, f"no champion; {name} {score:.3f} >= floor {policy.floor:.3f}")
    if name not in champion_metrics:
        raise InvalidInput(
            f"champion metrics lack {name!r} (the policy metric); got {sorted(champion_metrics)}"
        )
    champ = champion_metrics[name]
    promote = score + _TOLERANCE >= champ + policy.margin
    op = ">=" if promote else "<"
    reason = (
        f"{name} {score:.3f} {op} champion {champ:.3f} + margin {policy.margin:.3f} "
        "on the same holdout"
    )
    if not promote:
        return Decision(False, reason)
    regressions = slice_regressions(policy, slices, champion_slices)
    if not regressions:
        checked = sum(1 for s in slices if s.rows >= policy.min_slice_rows)
        return Decision(True, reason + (f"; no regression on {checked} slices" if slices else ""))
    worst = regressions[0]
    more = f" (and {len(regressions) - 1} more slices)" if len(regressions) > 1 else ""
    return Decision(
        False,
        f"slice {worst['column']}={worst['value']}: {name} {worst['candidate']:.3f} < champion "
        f"{worst['champion']:.3f} - slice tolerance {policy.slice_tolerance:.3f} on "
        f"{worst['rows']} holdout rows{more}",
        {"slice_regressions": regressions, "slice_tolerance": policy.slice_tolerance},
    )


def slice_regressions(
    policy: PromotionPolicy,
    slices: tuple[SliceMetric, ...],
    champion_slices: tuple[SliceMetric, ...],
) -> list[dict[str, Any]]:
    """Slices (with at least min_slice_rows rows, scored for both) where the candidate falls
    below the champion by more than the tolerance on the policy metric; worst drop first."""
    name = policy.metric
    champions = {(s.column, s.value): s for s in champion_slices}
    found = []
    for s in slices:
        champ = champions.get((s.column, s.value))
        if champ is None or s.rows < policy.min_slice_rows:
            continue
        if name not in s.metrics or name not in champ.metrics:
            continue
        drop = champ.metrics[name] - s.metrics[name]
        if drop > policy.slice_tolerance + _TOLERANCE:
            found.append(
                {
                    "column": s.column,
                    "value": s.value,
                    "rows": s.rows,
                    "metric": name,
                    "candidate": s.metrics[name],
                    "champion": champ.metrics[name],
                    "drop": drop,
                }
            )
    return sorted(found, key=lambda r: -float(r["drop"]))


@dataclass(frozen=True)
class LiveVerdict:
    """The policy's verdict on a shadow version's live evidence."""

    outcome: str
    """"waiting" (not enough labels, or not yet conclusive), "promoted" or "rejected"."""
    reason: str


def decide_live(
    policy: PromotionPolicy,
    labelled: int,
    shadow_metrics: dict[str, float],
    champion_metrics: dict[str, float],
) -> LiveVerdict:
    """Shadow mode: the shadow and the champion scored on the same labelled live requests.

    With at least shadow_min_labels labels: promote when the shadow beats the champion by the
    margin, reject when it is worse by the margin; in between wait for more labels, and reject
    once shadow_max_labels labels still did not show it better.
    """
    name = policy.metric
    for who, found in (("shadow", shadow_metrics), ("champion", champion_metrics)):
        if name not in found:
            raise InvalidInput(
                f"{who} live metrics lack {name!r} (the policy metric); got {sorted(found)}"
            )
    s, c, m = shadow_metrics[name], champion_metrics[name], policy.margin
    on = f"on {labelled} labelled live predictions (the same requests)"
    if labelled < policy.shadow_min_labels:
        return LiveVerdict(
            "waiting",
            f"{labelled} of {policy.shadow_min_labels} labelled live predictions so far; "
            f"live {name} {s:.3f} vs champion {c:.3f}",
        )
    if s + _TOLERANCE >= c + m:
        return LiveVerdict(
            "promoted", f"live {name} {s:.3f} >= champion {c:.3f} + margin {m:.3f} {on}"
        )
    if s + m <= c + _TOLERANCE:
        return LiveVerdict(
            "rejected", f"live {name} {s:.3f} <= champion {c:.3f} - margin {m:.3f} {on}"
        )
    if labelled >= policy.shadow_max_labels:
        return LiveVerdict(
            "rejected",
            f"live {name} {s:.3f} < champion {c:.3f} + margin {m:.3f} {on}, and "
            f"{policy.shadow_max_labels} labels were the most to wait for",
        )
    return LiveVerdict(
        "waiting",
        f"live {name} {s:.3f} vs champion {c:.3f} + margin {m:.3f} {on}: not yet conclusive, "
        f"waiting for up to {policy.shadow_max_labels} labels",
    )
