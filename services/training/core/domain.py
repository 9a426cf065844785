"""Training's view of the registry's types, and its own run record.

Plain dataclasses: the registry gRPC client converts to and from these, so the core never sees
protobuf messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftloop.shared.estimators import CLASSIFICATION, DEFAULT_METRICS, SearchSpec, task_of
from driftloop.shared.paired import PairedComparison


@dataclass(frozen=True)
class Evidence:
    """The parts of the registry's promotion policy that decide how much data a drift run waits
    for and how its candidate is compared (driftloop.shared.paired)."""

    metric: str = ""
    """The policy metric; "" means the task's default (ModelSpec.policy_metric)."""
    margin: float = 0.0
    confidence: float = 0.95
    min_improvement: float = 0.03
    power: float = 0.8
    max_attempts: int = 4


@dataclass(frozen=True)
class ModelSpec:
    features: tuple[str, ...] = ()
    estimator: str = "logistic_regression"
    params: dict[str, str] = field(default_factory=dict)
    window_rows: int = 2000
    holdout_fraction: float = 0.2
    min_rows: int = 200
    slice_columns: tuple[str, ...] = ()
    search: SearchSpec = SearchSpec()
    schedule_seconds: int = 0
    evidence: Evidence = Evidence()
    task: str = CLASSIFICATION
    """"classification" or "regression" (driftloop.shared.estimators.TASKS)."""
    partition_by: tuple[str, ...] = ()
    """A fleet's partition columns (driftloop.shared.fleet); empty for a single model."""

    @property
    def policy_metric(self) -> str:
        """The metric candidates are compared by: the policy's, or the task's default."""
        return self.evidence.metric or DEFAULT_METRICS[task_of(self.task)]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dataset: str
    target: str
    spec: ModelSpec
    production_version: str = ""
    spec_version: int = 0
    fleet: str = ""
    """For a partition model (FLEET/COLUMN=VALUE), its fleet."""

    @property
    def partition(self) -> str:
        """A partition model's COLUMN=VALUE/... suffix ("" for any other model)."""
        return self.name[len(self.fleet) + 1 :] if self.fleet else ""


@dataclass(frozen=True)
class SpecInfo:
    """One immutable spec version of a model, as the registry stores it."""

    number: int
    sha256: str
    spec: ModelSpec


@dataclass(frozen=True)
class SliceScore:
    """Metrics of the holdout rows where `column` == `value`."""

    column: str
    value: str
    rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Champion:
    version: str
    artifact_uri: str
    artifact_sha256: str


@dataclass(frozen=True)
class DataFileRef:
    key: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class CandidateLineage:
    run_id: str
    manifest_version: int
    manifest_key: str
    files: tuple[DataFileRef, ...]
    params: dict[str, str]
    code_version: str
    causing_event_id: str
    correlation_id: str
    episode_id: str
    parent_version: str
    trigger: str
    training_rows: int
    spec_version: int = 0
    spec_sha256: str = ""


@dataclass(frozen=True)
class CandidateVersion:
    model: str
    run_id: str
    artifact_uri: str
    artifact_sha256: str
    profile_uri: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float]
    champion_version: str
    lineage: CandidateLineage
    correlation_id: str
    causation_id: str
    slice_metrics: tuple[SliceScore, ...] = ()
    champion_slice_metrics: tuple[SliceScore, ...] = ()
    comparison: PairedComparison | None = None


@dataclass(frozen=True)
class Registration:
    version: str
    promoted: bool
    decision_reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    outcome: str = ""
    """"promoted", "rejected", "inconclusive" (more rows could decide) or "waiting"."""
    rows_needed: int = 0
    """Rows the registry's paired comparison needs to decide (inconclusive outcomes)."""
    attention: str = ""


@dataclass(frozen=True)
class Run:
    run_id: str
    model: str
    state: str
    trigger: str
    episode_id: str | None
    correlation_id: str
    causation_id: str
    data_since: float | None
    created_at: float
    reason: str = ""
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    registered_version: str = ""
    promoted: bool = False
    decision_reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    manifest_version: int = 0
    training_rows: int = 0
    fit_seconds: float = 0.0
    data_wait_seconds: float = 0.0
    caused_at: float | None = None
    cause_detail: str = ""
    progress: str = ""
    spec_version: int = 0
    best_params: dict[str, str] = field(default_factory=dict)
    schedule_slot: str | None = None
    attempt: int = 1
    wait_rows: int = 0
    """Post-drift rows to wait for before training (0: the executor's default)."""
    wait_reason: str = ""
    outcome: str = ""
    not_before: float | None = None
    """A run waiting for data is not claimed again before this time."""
    wait_started_at: float | None = None


@dataclass(frozen=True)
class RegisteredVersion:
    """A version as the registry recorded it: what reproducing it needs."""

    model: str
    version: str
    run_id: str
    artifact_uri: str
    artifact_sha256: str
    metrics: dict[str, float]
    manifest_version: int
    params: dict[str, str]
    spec_version: int = 0
