"""Registry domain types: training specs with their defaults, models, versions and lineage.

Plain dataclasses the store persists as JSON and the gRPC adapter converts to and from protobuf.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from driftloop.shared.errors import InvalidInput

ESTIMATORS = ("logistic_regression", "random_forest", "gradient_boosting")
METRICS = ("accuracy", "f1_macro")
STATUSES = ("candidate", "pending_approval", "production", "rejected", "archived")
MODES = ("auto", "approval")


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "accuracy"
    margin: float = 0.01
    floor: float = 0.6
    mode: str = "auto"
    """"auto": promote a passing candidate at once; "approval": it waits for Approve."""


@dataclass(frozen=True)
class TrainingSpec:
    features: tuple[str, ...] = ()
    estimator: str = "logistic_regression"
    params: dict[str, str] = field(default_factory=dict)
    window_rows: int = 2000
    holdout_fraction: float = 0.2
    min_rows: int = 200
    policy: PromotionPolicy = PromotionPolicy()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

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
        )


def with_defaults(spec: TrainingSpec) -> TrainingSpec:
    """Fill fields left at their zero value (proto3's "unset") with the defaults.

    A zero margin or floor therefore means "default"; ask for 1e-9 to mean "practically none".
    """
    default = TrainingSpec()
    p, dp = spec.policy, default.policy
    return replace(
        spec,
        estimator=spec.estimator or default.estimator,
        window_rows=spec.window_rows or default.window_rows,
        holdout_fraction=spec.holdout_fraction or default.holdout_fraction,
        min_rows=spec.min_rows or default.min_rows,
        policy=PromotionPolicy(
            metric=p.metric or dp.metric,
            margin=p.margin or dp.margin,
            floor=p.floor or dp.floor,
            mode=p.mode or dp.mode,
        ),
    )


def validate_spec(spec: TrainingSpec, target: str) -> TrainingSpec:
    """Return `spec` if it can be trained, else raise InvalidInput naming the bad field."""
    if spec.estimator not in ESTIMATORS:
        raise InvalidInput(f"unknown estimator {spec.estimator!r}: use one of {list(ESTIMATORS)}")
    if not 0 < spec.holdout_fraction < 0.9:
        raise InvalidInput(
            f"holdout_fraction {spec.holdout_fraction} must be between 0 and 0.9 (exclusive)"
        )
    if spec.window_rows <= 0 or spec.min_rows <= 0:
        raise InvalidInput("window_rows and min_rows must be positive")
    if spec.policy.metric not in METRICS:
        raise InvalidInput(f"unknown policy metric {spec.policy.metric!r}: use one of {METRICS}")
    if spec.policy.mode not in MODES:
        raise InvalidInput(f"unknown policy mode {spec.policy.mode!r}: use one of {list(MODES)}")
    if spec.policy.margin < 0:
        raise InvalidInput(f"policy margin {spec.policy.margin} must be >= 0")
    if not 0 <= spec.policy.floor <= 1:
        raise InvalidInput(f"policy floor {spec.policy.floor} must be between 0 and 1")
    if target in spec.features:
        raise InvalidInput(f"target column {target!r} cannot also be a feature")
    for name, value in spec.params.items():
        try:
            json.loads(value)
        except ValueError as exc:
            raise InvalidInput(
                f"estimator parameter {name}={value!r} is not a JSON value "
                '(write strings quoted, e.g. "\\"balanced\\"")'
            ) from exc
    return spec


@dataclass(frozen=True)
class Model:
    name: str
    dataset: str
    target: str
    spec: TrainingSpec
    created_at: float
    production_version: str = ""
    latest_version: int = 0


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        raw: dict[str, Any] = json.loads(text)
        raw["files"] = tuple(DataFile(**f) for f in raw.get("files", ()))
        return cls(**raw)


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


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    promoted: bool
    decision_reason: str


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
