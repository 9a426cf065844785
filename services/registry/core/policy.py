"""The promotion policy: does a candidate replace the champion? Pure, with the numbers as reason.

The candidate and the champion are scored by training on the same rows (overall and per
declared slice), with a paired comparison of the policy metric (driftloop.shared.paired): the
difference with a confidence interval and a p-value. The registry applies floor, margin and the
no-regression-on-any-slice rule on that evidence, and says when the evidence cannot decide yet
and how many rows it would need, so that training retries on more data while a drift episode
lasts.

Every rule follows the metric's direction (direction.py): the floor is a ceiling for an error
metric (MAE), and margins, min_improvement and slice tolerances are improvements, relative error
reductions for an error metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from driftloop.services.registry.core.direction import TOLERANCE, Direction, direction
from driftloop.services.registry.core.domain import PromotionPolicy, SliceMetric
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import REGRESSION
from driftloop.shared.paired import ASSUMED_SPREAD, PairedComparison, rows_needed

OUTCOMES = ("promoted", "rejected", "inconclusive")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    """The evidence: the paired comparison, and for a slice rejection the regressing slices."""
    outcome: str = ""
    """"promoted", "rejected" (conclusive: the evidence shows the candidate is not better by
    min_improvement, or worse) or "inconclusive" (more rows could decide: see rows_needed)."""
    rows_needed: int = 0
    attention: str = ""
    """Why a human should look at this decision (empty: no need)."""

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", "promoted" if self.promote else "rejected")
        if self.outcome == "inconclusive" and not self.reason.startswith("inconclusive"):
            # why: a retried registration reads the outcome back from the stored reason
            object.__setattr__(self, "reason", f"inconclusive: {self.reason}")


def decide(
    policy: PromotionPolicy,
    metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    slices: tuple[SliceMetric, ...] = (),
    champion_slices: tuple[SliceMetric, ...] = (),
    comparison: PairedComparison | None = None,
) -> Decision:
    """Promote when the candidate reaches the floor (stays within the ceiling, for an error
    metric) and, if there is a champion (its metrics given), is better by the margin without
    regressing beyond the slice tolerance on any slice with enough rows. With a paired
    comparison (the same rows scored by both), "better by the margin" means the lower
    confidence bound of the improvement reaches the margin; without one (an older training),
    the point estimates' improvement is compared. Raise InvalidInput when a needed metric is
    missing."""
    name = policy.metric
    way = direction(name)
    if name not in metrics:
        raise InvalidInput(
            f"candidate metrics lack {name!r} (the policy metric); got {sorted(metrics)}"
        )
    score = metrics[name]
    if champion_metrics is None:
        if way.fails(score, policy.floor):
            return Decision(False, way.failing(score, policy.floor))
        return Decision(True, f"no champion; {way.passing(score, policy.floor)}")
    if name not in champion_metrics:
        raise InvalidInput(
            f"champion metrics lack {name!r} (the policy metric); got {sorted(champion_metrics)}"
        )
    if comparison is not None and comparison.metric == name:
        verdict = _paired(policy, way, score, champion_metrics[name], comparison)
    else:
        verdict = _point(policy, way, score, champion_metrics[name])
    if not verdict.promote:
        return verdict
    regressions = slice_regressions(policy, slices, champion_slices)
    if not regressions:
        checked = sum(1 for s in slices if s.rows >= policy.min_slice_rows)
        more = f"; no regression on {checked} slices" if slices else ""
        return replace(verdict, reason=verdict.reason + more)
    worst = regressions[0]
    more = f" (and {len(regressions) - 1} more slices)" if len(regressions) > 1 else ""
    if way.lower_is_better:
        versus = (
            f"{name} {worst['candidate']:.3f} vs champion {worst['champion']:.3f} is "
            f"{worst['drop']:.3f} worse (relative), beyond the slice tolerance "
            f"{policy.slice_tolerance:.3f}"
        )
    else:
        versus = (
            f"{name} {worst['candidate']:.3f} < champion {worst['champion']:.3f} - slice "
            f"tolerance {policy.slice_tolerance:.3f}"
        )
    return Decision(
        False,
        f"slice {worst['column']}={worst['value']}: {versus} on {worst['rows']} holdout rows{more}",
        {
            **verdict.details,
            "slice_regressions": regressions,
            "slice_tolerance": policy.slice_tolerance,
        },
        attention=verdict.attention,
    )


def _point(policy: PromotionPolicy, way: Direction, score: float, champ: float) -> Decision:
    """The old rule, for candidates without a paired comparison: floor, then the improvement
    of the point estimates against the margin."""
    if way.fails(score, policy.floor):
        return Decision(False, way.failing(score, policy.floor))
    promote = way.improvement(score, champ) + TOLERANCE >= policy.margin
    return Decision(
        promote,
        f"{way.against(score, champ, policy.margin, promote, 'champion')} on the same holdout",
    )


def _needed(policy: PromotionPolicy, way: Direction, c: PairedComparison) -> int:
    """Rows a decision needs: McNemar's on the discordance for classification; for regression
    the normal formula on the comparison's spread (the per-row sd of the relative error
    reduction; a comparison without one, from before it was sent, gets the assumed spread)."""
    if way.metric.task == REGRESSION:
        return rows_needed(
            policy.min_improvement,
            policy.margin,
            confidence=c.confidence,
            power=policy.power,
            spread=c.spread if c.spread > 0 else ASSUMED_SPREAD,
        )
    return rows_needed(
        policy.min_improvement,
        policy.margin,
        discordance=c.discordance,
        confidence=c.confidence,
        power=policy.power,
    )


def _paired(
    policy: PromotionPolicy, way: Direction, score: float, champ: float, c: PairedComparison
) -> Decision:
    """The rule on a paired comparison: better when the lower bound reaches the margin (and the
    p-value is below 1 - confidence), "not better" when the upper bound is below
    min_improvement; in between, inconclusive with the rows a decision needs. The bounds are
    improvements already (paired.compare), whatever the metric's direction."""
    name = policy.metric
    floor, unit = policy.floor, way.unit
    details = {"comparison": c.to_dict()}
    # why: a negative margin is a non-inferiority test ("take the fresher model unless it is
    # worse by more than |margin|"): the bound alone decides; otherwise also the p-value
    significant = policy.margin < 0 or c.p_value <= 1 - c.confidence
    better = c.lower + TOLERANCE >= policy.margin and significant
    not_better = c.upper < policy.min_improvement
    evidence = c.summary()
    needed = 0 if better or not_better else _needed(policy, way, c)
    if way.fails(score, floor):
        if not way.fails(champ, floor):
            outcome = "inconclusive" if needed else "rejected"
            meets = "is within" if way.lower_is_better else "reaches"
            return Decision(
                False,
                f"{way.failing(score, floor)} (champion {champ:.3f} {meets} it); {evidence}",
                details,
                outcome,
                needed,
            )
        attention = (
            f"candidate and champion both fail the {way.bound}: {name} {score:.3f} and "
            f"{champ:.3f} {way.fail_op} {floor:.3f} on the same {c.rows} rows"
        )
        if better:
            return Decision(
                True,
                f"both {way.outside} {way.bound} {floor:.3f}, candidate significantly better: "
                f"{evidence}",
                details,
                "promoted",
                attention=attention + "; promoted the significantly better candidate",
            )
        return Decision(
            False,
            f"{way.failing(score, floor)} and not significantly better than the champion "
            f"(also {way.outside} the {way.bound}): {evidence}",
            details,
            "inconclusive" if needed else "rejected",
            needed,
            attention + "; kept the champion",
        )
    if better:
        return Decision(
            True,
            f"lower bound {c.lower:+.3f} >= margin {policy.margin:.3f}{unit}: {evidence}",
            details,
        )
    if not_better:
        return Decision(
            False,
            f"not better by {policy.min_improvement:.3f}{unit} (upper bound {c.upper:+.3f}): "
            f"the champion is as good; {evidence}",
            details,
        )
    return Decision(
        False,
        f"inconclusive: lower bound {c.lower:+.3f} < margin {policy.margin:.3f}{unit} and upper "
        f"bound {c.upper:+.3f} >= {policy.min_improvement:.3f}; {evidence}; seeing an "
        f"improvement of {policy.min_improvement:.3f} needs about {needed} rows",
        details,
        "inconclusive",
        needed,
    )


def slice_regressions(
    policy: PromotionPolicy,
    slices: tuple[SliceMetric, ...],
    champion_slices: tuple[SliceMetric, ...],
) -> list[dict[str, Any]]:
    """Slices (with at least min_slice_rows rows, scored for both) where the candidate is worse
    than the champion by more than the tolerance on the policy metric, in the margin's unit
    (an improvement below -slice_tolerance: relative for an error metric); worst drop first."""
    name = policy.metric
    way = direction(name)
    champions = {(s.column, s.value): s for s in champion_slices}
    found = []
    for s in slices:
        champ = champions.get((s.column, s.value))
        if champ is None or s.rows < policy.min_slice_rows:
            continue
        if name not in s.metrics or name not in champ.metrics:
            continue
        drop = -way.improvement(s.metrics[name], champ.metrics[name])
        if drop > policy.slice_tolerance + TOLERANCE:
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
    comparison: PairedComparison | None = None,
) -> LiveVerdict:
    """Shadow mode: the shadow and the champion scored on the same labelled live requests.

    With at least shadow_min_labels labels and a paired comparison (shadow minus champion):
    promote when its lower bound reaches the margin, reject when its upper bound is below
    min_improvement, else wait, and reject once shadow_max_labels labels still did not show it
    better. Without one (an older reporter, or a metric monitoring sends no counts for), the
    point estimates' improvement is compared with the margin.
    """
    name = policy.metric
    way = direction(name)
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
    if comparison is not None:
        evidence = comparison.summary()
        significant = m < 0 or comparison.p_value <= 1 - comparison.confidence
        if comparison.lower + TOLERANCE >= m and significant:
            return LiveVerdict("promoted", f"live lower bound >= margin {m:.3f} {on}: {evidence}")
        if comparison.upper < policy.min_improvement:
            return LiveVerdict(
                "rejected",
                f"live: not better by {policy.min_improvement:.3f} {on}: {evidence}",
            )
    elif way.improvement(s, c) + TOLERANCE >= m:
        return LiveVerdict("promoted", f"live {way.against(s, c, m, True, 'champion')} {on}")
    elif way.improvement(s, c) + m <= TOLERANCE:
        worse = (
            f"live {name} {s:.3f} vs champion {c:.3f}: relative error reduction "
            f"{way.improvement(s, c):+.3f} <= -margin {m:.3f}"
            if way.lower_is_better
            else f"live {name} {s:.3f} <= champion {c:.3f} - margin {m:.3f}"
        )
        return LiveVerdict("rejected", f"{worse} {on}")
    if labelled >= policy.shadow_max_labels:
        return LiveVerdict(
            "rejected",
            f"live {name} {s:.3f} vs champion {c:.3f} {on}: not shown better, and "
            f"{policy.shadow_max_labels} labels were the most to wait for",
        )
    return LiveVerdict(
        "waiting",
        f"live {name} {s:.3f} vs champion {c:.3f} {on}: not yet conclusive, "
        f"waiting for up to {policy.shadow_max_labels} labels",
    )


def decide_probation(
    policy: PromotionPolicy,
    labelled: int,
    previous_metrics: dict[str, float],
    production_metrics: dict[str, float],
    comparison: PairedComparison | None = None,
) -> LiveVerdict:
    """After a promotion, the previous version runs as a shadow on live traffic ("probation").
    "rollback" when it is significantly better than the new production version on the same
    labelled requests (lower bound of previous minus production above 0); "kept" when the
    evidence shows the new version is not worse by min_improvement, or shadow_max_labels labels
    did not show it worse; else "waiting".

    Never a rollback without evidence: when either side's live metrics lack the policy metric
    (monitoring measures accuracy; a regressor's live error is not reported as paired evidence
    yet), it waits, and keeps the new version once shadow_max_labels labels came and went. The
    registry opens no probation for such a model in the first place (decisions.start_probation).
    """
    name = policy.metric
    way = direction(name)
    on = f"on {labelled} labelled live requests both answered"
    if labelled < policy.shadow_min_labels:
        return LiveVerdict(
            "waiting", f"probation: {labelled} of {policy.shadow_min_labels} labelled requests"
        )
    if name not in previous_metrics or name not in production_metrics:
        if labelled >= policy.shadow_max_labels:
            return LiveVerdict(
                "kept",
                f"probation passed: {labelled} labelled requests brought no live {name} of both "
                "versions, and no rollback is made without evidence",
            )
        return LiveVerdict("waiting", f"probation: no live {name} of both versions yet {on}")
    p, n = previous_metrics[name], production_metrics[name]
    if comparison is not None:
        evidence = f"previous vs new: {comparison.summary()}"
        if comparison.lower > TOLERANCE and comparison.p_value <= 1 - comparison.confidence:
            return LiveVerdict("rollback", f"the new version is worse on live labels: {evidence}")
        if comparison.upper < policy.min_improvement:
            return LiveVerdict(
                "kept",
                f"probation passed: the new version is not worse by "
                f"{policy.min_improvement:.3f}: {evidence}",
            )
    elif way.improvement(p, n) >= policy.min_improvement:
        return LiveVerdict(
            "rollback",
            f"the new version is worse on live labels: {name} {n:.3f} vs previous {p:.3f} {on}",
        )
    if labelled >= policy.shadow_max_labels:
        return LiveVerdict(
            "kept",
            f"probation passed: {policy.shadow_max_labels} labelled requests did not show the "
            f"new version worse ({name} {n:.3f} vs previous {p:.3f})",
        )
    return LiveVerdict(
        "waiting",
        f"probation: {name} {n:.3f} vs previous {p:.3f} {on}: not yet conclusive",
    )
