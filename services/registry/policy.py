"""The promotion policy: does a candidate replace the champion? Pure, with the numbers as reason.

The candidate and the champion are scored by training on the same recent holdout, so their
metrics are comparable; the registry only applies margin and floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftloop.services.registry.domain import PromotionPolicy
from driftloop.shared.errors import InvalidInput

_TOLERANCE = 1e-9
"""Float slack so that e.g. 0.94 + 0.01 counts as reaching 0.95."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    policy: PromotionPolicy,
    metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
) -> Decision:
    """Promote when the candidate reaches the floor and, if there is a champion (its metrics
    given), beats it by at least the margin. Raise InvalidInput when a needed metric is missing."""
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
    return Decision(
        promote,
        f"{name} {score:.3f} {op} champion {champ:.3f} + margin {policy.margin:.3f} "
        "on the same holdout",
    )
