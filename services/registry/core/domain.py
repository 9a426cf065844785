"""Registry domain types: training specs with their defaults, models, versions and lineage.

Plain dataclasses the store persists as JSON and the gRPC adapter converts to and from protobuf.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from driftloop.shared import estimators, fleet
from driftloop.shared.errors import InvalidInput
from driftloop.shared.estimators import CLASSIFICATION, DEFAULT_METRIC, REGRESSION, SearchSpec
from driftloop.shared.names import check_column_name
from driftloop.shared.paired import PairedComparison

STATUSES = ("candidate", "pending_approval", "shadow", "production", "rejected", "archived")
MODES = ("auto", "approval", "shadow")
"""Policy modes: "auto" promotes a passing candidate at once, "approval" makes it wait for
Approve, "shadow" runs it beside production on live traffic until live labels decide (shadow.py)."""
MAX_SLICE_VALUES = 100
"""Slices kept per slice column (the most frequent values); more would flood versions."""


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = DEFAULT_METRIC
    margin: float = 0.0
    """The lower confidence bound of the candidate's improvement over the champion, on the same
    rows, must reach this (0: significantly better at `confidence`; negative: not worse by more
    than that, a non-inferiority test for "prefer the fresher model")."""
    floor: float = 0.6
    """The least a candidate must reach on its own: a minimum for a score (accuracy, F1, R²,
    in [0, 1]), a maximum (a ceiling) for an error (MAE, RMSE, MAPE, in the target's unit);
    0 means none. Classification's default is 0.6, regression's none (DEFAULT_FLOOR)."""
    mode: str = "auto"
    """"auto": promote a passing candidate at once; "approval": it waits for Approve."""
    slice_tolerance: float = 0.05
    """Largest drop of the policy metric vs the champion allowed on any declared slice, in the
    margin's unit (Metric.improvement: relative for an error metric, 0.05 = 5% more error)."""
    min_slice_rows: int = 30
    """Slices with fewer holdout rows than this are reported but never reject."""
    shadow_min_labels: int = 200
    """Shadow mode: labelled live predictions needed before the shadow may be promoted."""
    shadow_max_labels: int = 1000
    """Shadow mode: with this many labels and still not better by the margin, it is rejected."""
    confidence: float = 0.95
    """One-sided confidence of the paired comparison (driftloop.shared.paired)."""
    min_improvement: float = 0.03
    """The smallest improvement worth detecting: training waits for the rows needed to see it,
    and a candidate whose upper bound is below it is conclusively "not better". In the margin's
    unit; the default depends on the task (DEFAULT_MIN_IMPROVEMENT)."""
    power: float = 0.8
    """Chance of seeing an improvement of min_improvement when it is there."""
    max_attempts: int = 4
    """Training tries per drift episode, on growing post-drift windows."""


DEFAULT_FLOOR = {CLASSIFICATION: PromotionPolicy().floor, REGRESSION: 0.0}
"""Regression has no default floor: an error's scale is the target's, which the registry cannot
guess (an MAE of 10 is excellent on house prices and useless on temperatures)."""
DEFAULT_MIN_IMPROVEMENT = {CLASSIFICATION: PromotionPolicy().min_improvement, REGRESSION: 0.05}
"""Classification: 3 accuracy points (absolute). Regression: a 5% error reduction (relative).
Why not 0.03 there too: one row's share of a relative error reduction spreads about twice as
widely as one row's accuracy difference (paired.ASSUMED_SPREAD 0.8 against the sqrt(0.15) of
ASSUMED_DISCORDANCE), so 3% would need about 4,400 post-drift rows to see (paired.rows_needed)
where 5% needs about 1,600, the same order as classification's 3 points (about 1,000); and an
error 5% lower is the smallest change of a regressor an operator usually acts on."""
LIVE_EVIDENCE_TASKS = (CLASSIFICATION,)
"""Tasks monitoring reports paired live evidence for (accuracy counts on labelled requests both
versions answered): shadow mode and the probation after a promotion need it (shadow.py)."""


@dataclass(frozen=True)
class TrainingSpec:
    features: tuple[str, ...] = ()
    estimator: str = "logistic_regression"
    params: dict[str, str] = field(default_factory=dict)
    window_rows: int = 2000
    holdout_fraction: float = 0.2
    min_rows: int = 200
    policy: PromotionPolicy = PromotionPolicy()
    slice_columns: tuple[str, ...] = ()
    search: SearchSpec = SearchSpec()
    schedule_seconds: int = 0
    task: str = ""
    """"classification" or "regression"; "" (unset) is classification, filled in by
    with_defaults."""
    partition_by: tuple[str, ...] = ()
    """A fleet: one model per value of these columns (shared/fleet.py)."""

    def to_json(self) -> str:
        raw = asdict(self)
        if raw["task"] in ("", estimators.CLASSIFICATION):
            # why: specs stored before regression existed keep their hash (SetSpec of an
            # unchanged spec is still no new version)
            del raw["task"]
        if not raw["partition_by"]:
            del raw["partition_by"]  # the same for specs stored before fleets
        return json.dumps(raw, sort_keys=True)

    def sha256(self) -> str:
        """Hash of the canonical JSON: equal specs hash equal."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> TrainingSpec:
        raw = json.loads(text)
        return cls(
            features=tuple(raw["features"]),
            estimator=raw["estimator"],
            params=raw["params"],
            window_rows=raw["window_rows"],
            holdout_fraction=raw["holdout_fraction"],
            min_rows=raw["min_rows"],
            policy=PromotionPolicy(**raw["policy"]),
            slice_columns=tuple(raw.get("slice_columns", ())),
            search=SearchSpec(**raw.get("search", {})),
            schedule_seconds=int(raw.get("schedule_seconds", 0)),
            task=str(raw.get("task", "")),
            partition_by=tuple(raw.get("partition_by", ())),
        )


@dataclass(frozen=True)
class SpecVersion:
    """One immutable version of a model's training spec."""

    model: str
    number: int
    spec: TrainingSpec
    sha256: str
    author: str
    created_at: float
    comment: str = ""


def with_defaults(spec: TrainingSpec) -> TrainingSpec:
    """Fill fields left at their zero value (proto3's "unset") with the defaults, which follow
    the task ("" is classification): the estimator, the policy metric (and so the search's
    scoring), the floor (none for regression) and min_improvement.

    A zero margin or floor therefore means "default"; ask for 1e-9 to mean "practically none".
    An unknown task is left as it is for validate_spec to name.
    """
    default = TrainingSpec()
    p, dp = spec.policy, default.policy
    task = spec.task or CLASSIFICATION
    known = task in estimators.TASKS
    metric = p.metric or (estimators.DEFAULT_METRICS[task] if known else dp.metric)
    margin = p.margin or dp.margin
    least = DEFAULT_MIN_IMPROVEMENT[task] if known else dp.min_improvement
    return replace(
        spec,
        task=task,
        estimator=spec.estimator
        or (estimators.DEFAULT_ESTIMATOR[task] if known else default.estimator),
        window_rows=spec.window_rows or default.window_rows,
        holdout_fraction=spec.holdout_fraction or default.holdout_fraction,
        min_rows=spec.min_rows or default.min_rows,
        policy=PromotionPolicy(
            metric=metric,
            margin=margin,
            floor=p.floor or (DEFAULT_FLOOR[task] if known else dp.floor),
            mode=p.mode or dp.mode,
            slice_tolerance=p.slice_tolerance or dp.slice_tolerance,
            min_slice_rows=p.min_slice_rows or dp.min_slice_rows,
            shadow_min_labels=p.shadow_min_labels or dp.shadow_min_labels,
            shadow_max_labels=p.shadow_max_labels
            or 5 * (p.shadow_min_labels or dp.shadow_min_labels),
            confidence=p.confidence or dp.confidence,
            # why: the improvement to detect must exceed the margin the bound has to reach
            min_improvement=p.min_improvement or max(least, margin + 0.02),
            power=p.power or dp.power,
            max_attempts=p.max_attempts or dp.max_attempts,
        ),
        search=_search_defaults(spec.search, metric),
    )


def _search_defaults(search: SearchSpec, metric: str) -> SearchSpec:
    if not search.param_grid:
        return SearchSpec()
    return replace(search, cv=search.cv or SearchSpec().cv, scoring=search.scoring or metric)


def validate_spec(spec: TrainingSpec, target: str) -> TrainingSpec:
    """Return `spec` if it can be trained, else raise InvalidInput naming the bad field: the
    estimator, the policy metric and the search scoring must be of the spec's task."""
    task = estimators.task_of(spec.task)
    estimators.estimator(spec.estimator, task=task)
    if not 0 < spec.holdout_fraction < 0.9:
        raise InvalidInput(
            f"spec field 'holdout_fraction': {spec.holdout_fraction} must be between 0 and 0.9 "
            "(exclusive)"
        )
    if spec.window_rows <= 0 or spec.min_rows <= 0:
        raise InvalidInput("spec fields 'window_rows' and 'min_rows' must be positive")
    metric = estimators.metric(spec.policy.metric, "policy.metric", task)
    if spec.search.scoring:
        estimators.metric(spec.search.scoring, "search.scoring", task)
    if spec.policy.mode not in MODES:
        raise InvalidInput(
            f"spec field 'policy.mode': unknown {spec.policy.mode!r}: use one of {list(MODES)}"
        )
    if spec.policy.mode == "shadow" and task not in LIVE_EVIDENCE_TASKS:
        raise InvalidInput(
            f"spec field 'policy.mode': 'shadow' waits for paired live evidence, which "
            f"monitoring reports for {' and '.join(LIVE_EVIDENCE_TASKS)} only: a {task} "
            "shadow would wait forever; use 'auto' or 'approval'"
        )
    if not -0.5 <= spec.policy.margin < 1:
        raise InvalidInput(
            f"spec field 'policy.margin': {spec.policy.margin} must be in [-0.5, 1) (negative: "
            "promote unless worse by more than that, a non-inferiority test)"
        )
    _check_floor(spec.policy.floor, metric)
    if target in spec.features:
        raise InvalidInput(
            f"spec field 'features': the target column {target!r} cannot also be a feature"
        )
    fleet.check_partition_by(spec.partition_by, target)
    for column in spec.partition_by:
        check_column_name(column)
    if target in spec.slice_columns:
        raise InvalidInput(
            f"spec field 'slice_columns': the target {target!r} cannot be a slice column"
        )
    if spec.policy.slice_tolerance < 0 or spec.policy.min_slice_rows < 0:
        raise InvalidInput(
            "spec fields 'policy.slice_tolerance' and 'policy.min_slice_rows' must be >= 0"
        )
    if spec.policy.shadow_min_labels < 1 or spec.policy.shadow_max_labels < (
        spec.policy.shadow_min_labels
    ):
        raise InvalidInput(
            "spec fields 'policy.shadow_min_labels' and 'policy.shadow_max_labels': need "
            f"1 <= min ({spec.policy.shadow_min_labels}) <= max ({spec.policy.shadow_max_labels})"
        )
    _check_evidence_policy(spec.policy)
    if spec.schedule_seconds < 0:
        raise InvalidInput(f"spec field 'schedule': {spec.schedule_seconds}s must not be negative")
    for name, value in spec.params.items():
        estimators.decode_param(f"params.{name}", value)
    return spec


def _check_floor(floor: float, metric: estimators.Metric) -> None:
    if metric.higher_is_better:
        if not 0 <= floor <= 1:
            raise InvalidInput(f"spec field 'policy.floor': {floor} must be between 0 and 1")
    elif not (math.isfinite(floor) and floor >= 0):
        raise InvalidInput(
            f"spec field 'policy.floor': {floor} must be a number >= 0: for {metric.name}, "
            "an error, the floor is a ceiling (the most error a candidate may have, in the "
            "target's unit; 0: none)"
        )


def _check_evidence_policy(policy: PromotionPolicy) -> None:
    for name, value in (("confidence", policy.confidence), ("power", policy.power)):
        if not 0.5 <= value < 1:
            raise InvalidInput(f"spec field 'policy.{name}': {value} must be in [0.5, 1)")
    if not policy.margin < policy.min_improvement <= 1:
        raise InvalidInput(
            f"spec field 'policy.min_improvement': {policy.min_improvement} must be above the "
            f"margin ({policy.margin}) and at most 1"
        )
    if not 1 <= policy.max_attempts <= 10:
        raise InvalidInput(
            f"spec field 'policy.max_attempts': {policy.max_attempts} must be within 1..10"
        )


@dataclass(frozen=True)
class Model:
    name: str
    dataset: str
    target: str
    spec: TrainingSpec
    created_at: float
    production_version: str = ""
    latest_version: int = 0
    spec_version: int = 0
    shadow_version: str = ""
    fleet: str = ""
    """For a partition model (FLEET/COLUMN=VALUE), its fleet; its spec is the fleet's."""
    partitions: int = 0
    """For a fleet, how many partition models it has."""
    revision: int = 0
    """The registry revision of the model's last change (store.py's migration 6)."""


@dataclass(frozen=True)
class ModelListing:
    """Models as listed, and the registry revision they were listed at."""

    models: list[Model]
    revision: int


@dataclass(frozen=True)
class DataFile:
    key: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Lineage:
    """Where a version came from; `model` and `version` are filled in by the registry."""

    model: str = ""
    version: str = ""
    run_id: str = ""
    manifest_version: int = 0
    manifest_key: str = ""
    files: tuple[DataFile, ...] = ()
    params: dict[str, str] = field(default_factory=dict)
    code_version: str = ""
    causing_event_id: str = ""
    correlation_id: str = ""
    episode_id: str = ""
    parent_version: str = ""
    trigger: str = ""
    training_rows: int = 0
    spec_version: int = 0
    spec_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        raw: dict[str, Any] = json.loads(text)
        raw["files"] = tuple(DataFile(**f) for f in raw.get("files", ()))
        return cls(**raw)


@dataclass(frozen=True)
class SliceMetric:
    """Metrics of the holdout rows where `column` == `value`."""

    column: str
    value: str
    rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Candidate:
    """A trained version as training registers it."""

    model: str
    run_id: str
    artifact_uri: str
    artifact_sha256: str
    profile_uri: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float]
    champion_version: str
    lineage: Lineage
    correlation_id: str = ""
    causation_id: str = ""
    slice_metrics: tuple[SliceMetric, ...] = ()
    champion_slice_metrics: tuple[SliceMetric, ...] = ()
    comparison: PairedComparison | None = None
    """Candidate vs champion on the same rows, from the run record (None without a champion)."""


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    status: str
    artifact_uri: str
    artifact_sha256: str
    profile_uri: str
    metrics: dict[str, float]
    lineage: Lineage
    decision_reason: str
    created_at: float
    run_id: str
    slice_metrics: tuple[SliceMetric, ...] = ()


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    promoted: bool
    decision_reason: str
    outcome: str = ""
    """"promoted", "rejected" (conclusive), "inconclusive" (more rows could decide) or
    "waiting" (for approval or live shadow evidence)."""
    rows_needed: int = 0
    """Rows the paired comparison needs to decide (inconclusive outcomes; 0: not known)."""
    attention: str = ""
    """Why a human should look (empty: no need)."""


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias: who or what moved it, when and why."""

    alias: str
    version: str
    previous_version: str
    reason: str
    actor: str
    at: float
    action: str


@dataclass(frozen=True)
class AuditRecord:
    at: float
    model: str
    version: str
    action: str
    reason: str
    details: dict[str, Any]
    correlation_id: str = ""


@dataclass(frozen=True)
class History:
    aliases: list[AliasChange]
    audit: list[AuditRecord]
