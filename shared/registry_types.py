"""The registry's records as its clients see them: small frozen dataclasses, no protobuf.

Names follow the registry API (protos/driftloop/protos/registry/v1/registry.proto) field by field,
so one reads like the other; an unset field is its zero value, and times are epoch seconds or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftloop.shared.paired import PairedComparison


@dataclass(frozen=True)
class PromotionPolicy:
    """When a candidate replaces the champion (zero values: the registry's defaults)."""

    metric: str = ""
    margin: float = 0.0
    floor: float = 0.0
    mode: str = ""
    """"auto", "approval" or "shadow"."""
    slice_tolerance: float = 0.0
    min_slice_rows: int = 0
    shadow_min_labels: int = 0
    shadow_max_labels: int = 0
    confidence: float = 0.0
    min_improvement: float = 0.0
    power: float = 0.0
    max_attempts: int = 0


@dataclass(frozen=True)
class SearchSpec:
    """A hyper-parameter search inside training; an empty grid means none."""

    param_grid: dict[str, str] = field(default_factory=dict)
    """Estimator parameter -> JSON list of values."""
    cv: int = 0
    max_candidates: int = 0
    scoring: str = ""


@dataclass(frozen=True)
class TrainingSpec:
    features: tuple[str, ...] = ()
    estimator: str = ""
    params: dict[str, str] = field(default_factory=dict)
    """Estimator parameters as JSON text ("0.5", "100", "\\"balanced\\"")."""
    window_rows: int = 0
    holdout_fraction: float = 0.0
    min_rows: int = 0
    policy: PromotionPolicy = PromotionPolicy()
    slice_columns: tuple[str, ...] = ()
    search: SearchSpec = SearchSpec()
    schedule_seconds: int = 0
    task: str = ""
    """"classification" or "regression" ("" from an older registry: classification)."""
    partition_by: tuple[str, ...] = ()
    """A fleet's partition columns (shared/fleet.py); empty for a single model."""


@dataclass(frozen=True)
class SpecVersion:
    """One immutable version of a model's training spec."""

    model: str
    number: int
    spec: TrainingSpec
    sha256: str = ""
    author: str = ""
    created_at: float | None = None
    comment: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    dataset: str
    target: str
    spec: TrainingSpec = TrainingSpec()
    production_version: str = ""
    """Empty until a version is promoted."""
    created_at: float | None = None
    latest_version: int = 0
    spec_version: int = 0
    shadow_version: str = ""
    """The version the "shadow" alias points at (empty when none)."""
    fleet: str = ""
    """For a partition model (FLEET/COLUMN=VALUE), its fleet; empty otherwise."""
    partitions: int = 0
    """For a fleet, how many partition models it has (0 from a registry that does not count)."""
    revision: int = 0
    """The registry revision of the model's last change (ModelListing.revision)."""


@dataclass(frozen=True)
class ModelListing:
    """Models as listed and the registry's revision then: list again with
    `changed_after=revision` to get only what changed since."""

    models: tuple[Model, ...]
    revision: int


@dataclass(frozen=True)
class DataFile:
    key: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: data, parameters, code and the event that caused it."""

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


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics of the holdout rows where `column` has `value`."""

    column: str
    value: str
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: str
    status: str = ""
    """"candidate", "pending_approval", "shadow", "production", "rejected" or "archived"."""
    artifact_uri: str = ""
    artifact_sha256: str = ""
    profile_uri: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: Lineage = Lineage()
    decision_reason: str = ""
    created_at: float | None = None
    run_id: str = ""
    slice_metrics: tuple[SliceMetrics, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A trained version to register; the registry applies the promotion policy at once."""

    model: str
    run_id: str
    artifact_uri: str
    artifact_sha256: str
    profile_uri: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    """The champion's metrics on the same holdout (empty when there is no champion)."""
    champion_version: str = ""
    lineage: Lineage = Lineage()
    correlation_id: str = ""
    causation_id: str = ""
    slice_metrics: tuple[SliceMetrics, ...] = ()
    champion_slice_metrics: tuple[SliceMetrics, ...] = ()
    comparison: PairedComparison | None = None
    """Candidate vs champion on the same rows (None without a champion)."""


@dataclass(frozen=True)
class Registration:
    """What registering a candidate did (registering a run again returns the first answer)."""

    version: ModelVersion
    promoted: bool
    decision_reason: str
    outcome: str = ""
    """"promoted", "rejected", "inconclusive" (more rows could decide) or "waiting"."""
    rows_needed: int = 0
    attention: str = ""


@dataclass(frozen=True)
class AliasChange:
    """One move of an alias ("production" or "shadow"): who moved it, when, why."""

    alias: str = ""
    version: str = ""
    previous_version: str = ""
    reason: str = ""
    actor: str = ""
    at: float | None = None
    action: str = ""


@dataclass(frozen=True)
class AuditRecord:
    """One registry decision with the numbers behind it (`details_json`, a JSON object)."""

    at: float | None = None
    model: str = ""
    version: str = ""
    action: str = ""
    reason: str = ""
    details_json: str = ""
    correlation_id: str = ""


@dataclass(frozen=True)
class History:
    aliases: tuple[AliasChange, ...] = ()
    audit: tuple[AuditRecord, ...] = ()


@dataclass(frozen=True)
class ShadowEvidence:
    """A shadow and its champion scored on the same labelled live requests."""

    model: str
    version: str
    champion_version: str
    labelled: int
    shadow_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    actor: str = ""
    shadow_only_right: int = 0
    champion_only_right: int = 0


@dataclass(frozen=True)
class ShadowVerdict:
    """The registry's answer to shadow evidence."""

    outcome: str
    """"waiting", "promoted", "rejected" or "stale"."""
    reason: str
    min_labels: int
    version: ModelVersion
