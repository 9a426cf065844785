"""The registry core: declare models, register versions under the promotion policy, move the
production alias by hand, and write every decision's events to the outbox in the same commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from driftloop.services.registry.core import decisions, events, shadow, specs
from driftloop.services.registry.core.candidates import (
    StoredObjects,
    check_candidate,
    verify_against_store,
)
from driftloop.services.registry.core.domain import (
    STATUSES,
    Candidate,
    History,
    Lineage,
    Model,
    ModelListing,
    ModelVersion,
    Registration,
    SpecVersion,
    TrainingSpec,
    validate_spec,
    with_defaults,
)
from driftloop.services.registry.core.metrics import record_decision
from driftloop.services.registry.core.store import RegistryStore, RegistryTx
from driftloop.shared import fleet
from driftloop.shared.errors import AlreadyExists, Conflict, InvalidInput, NotFound, TooLarge
from driftloop.shared.estimators import task_of
from driftloop.shared.names import check_name

log = structlog.get_logger(__name__)


class Registry:
    """Every registry operation; each mutation is one store transaction, then `on_commit()`
    (the outbox publisher's wake-up) is called."""

    def __init__(
        self,
        store: RegistryStore,
        on_commit: Callable[[], None] = lambda: None,
        *,
        max_search_candidates: int = 50,
        objects: StoredObjects | None = None,
        max_partitions: int = fleet.DEFAULT_MAX_PARTITIONS,
    ) -> None:
        """`objects`: the object store, to verify each candidate's artifact hash and metrics
        against what is stored (candidates.verify_against_store); None skips that check
        (unit tests of the policy and the store)."""
        self._store = store
        self._on_commit = on_commit
        self._max_search = max_search_candidates
        self._objects = objects
        self._max_partitions = max_partitions

    # models
    def create_model(
        self,
        name: str,
        dataset: str,
        target: str,
        spec: TrainingSpec,
        spec_yaml: str = "",
        author: str = "",
    ) -> Model:
        """Declare a model; its spec (from `spec`, or `spec_yaml` when given, which may also name
        dataset and target) becomes spec version 1."""
        if spec_yaml:
            parsed = specs.parse_yaml(spec_yaml)
            spec = parsed.spec
            dataset = _same("dataset", dataset, parsed.dataset)
            target = _same("target", target, parsed.target)
        if fleet.parse(name) is not None:
            raise InvalidInput(
                f"model {name!r} is a partition model name: partition models appear by "
                "themselves when their fleet trains (declare the fleet, with partition_by)"
            )
        check_name("model", name)
        check_name("dataset", dataset)
        if not target:
            raise InvalidInput("target column is empty: name the column the model predicts")
        spec = self._checked(spec, target)
        model = Model(name=name, dataset=dataset, target=target, spec=spec, created_at=time.time())
        with self._store.transaction() as tx:
            if tx.model(name) is not None:
                raise AlreadyExists(f"model {name!r} already exists")
            tx.insert_model(model)
            first = tx.set_spec(name, spec, author or "operator", "model declared")
            tx.add_audit(
                name,
                "",
                "create",
                "model declared",
                {"dataset": dataset, "target": target, "spec_sha256": first.sha256},
            )
        log.info("model_created", model=name, dataset=dataset, target=target)
        return replace(model, spec_version=1)

    def _checked(self, spec: TrainingSpec, target: str) -> TrainingSpec:
        spec = validate_spec(with_defaults(spec), target)
        specs.check_estimator(spec, self._max_search)
        return spec

    # spec versions
    def set_spec(
        self,
        name: str,
        spec: TrainingSpec,
        spec_yaml: str = "",
        author: str = "",
        comment: str = "",
    ) -> SpecVersion:
        """A new immutable spec version, or the current one when the spec did not change."""
        with self._store.transaction() as tx:
            model = _need_model(tx, name)
        if model.fleet:
            raise InvalidInput(
                f"model {name} is a partition of fleet {model.fleet} and trains with the "
                f"fleet's spec: set the spec of {model.fleet}"
            )
        if spec_yaml:
            parsed = specs.parse_yaml(spec_yaml)
            _same("dataset", model.dataset, parsed.dataset, changeable=False)
            _same("target", model.target, parsed.target, changeable=False)
            spec = parsed.spec
        spec = self._checked(spec, model.target)
        _same_task(model, spec)
        with self._store.transaction() as tx:
            _same_partitions(tx, model, spec)
            current = tx.spec_versions(name, _need_model(tx, name).spec_version)
            if current and current[0].sha256 == spec.sha256():
                return current[0]
            version = tx.set_spec(name, spec, author or "operator", comment)
            tx.add_audit(
                name,
                "",
                "set_spec",
                comment or f"spec version {version.number}",
                {"spec_version": version.number, "spec_sha256": version.sha256, "actor": author},
            )
        log.info("spec_set", model=name, spec_version=version.number, sha256=version.sha256)
        return version

    def get_spec(self, name: str, number: int = 0) -> SpecVersion:
        if number < 0:
            raise InvalidInput("spec version number must not be negative")
        with self._store.transaction() as tx:
            model = _need_model(tx, name)
            found = tx.spec_versions(model.fleet or name, number or model.spec_version)
        if not found:
            raise NotFound(f"model {name} has no spec version {number}")
        return found[0]

    def list_specs(self, name: str) -> list[SpecVersion]:
        with self._store.transaction() as tx:
            model = _need_model(tx, name)
            return tx.spec_versions(model.fleet or name)

    def get_model(self, name: str) -> Model:
        with self._store.transaction() as tx:
            return _need_model(tx, name)

    def list_models(self, fleet_name: str = "") -> list[Model]:
        """Every model, or only the partition models of `fleet_name`."""
        return self.listing(fleet_name).models

    def listing(self, fleet_name: str = "", changed_after: int = 0) -> ModelListing:
        """`list_models`, only the models changed after revision `changed_after` (0: all), with
        the registry's revision as of this listing (the caller's next `changed_after`)."""
        if changed_after < 0:
            raise InvalidInput("changed_after must not be negative (0 lists every model)")
        with self._store.transaction() as tx:
            if fleet_name:
                _need_model(tx, fleet_name)
            return ModelListing(tx.models(fleet_name, changed_after), tx.revision())

    # versions
    def register(self, c: Candidate) -> Registration:
        """Record a candidate and apply the policy; idempotent by run_id. In approval mode a
        passing candidate waits with status "pending_approval" until `approve`."""
        check_candidate(c)
        if self._objects is not None:
            verify_against_store(c, self._objects)
        with self._store.transaction() as tx:
            model = self._model_or_new_partition(tx, c.model)
            existing = tx.version_by_run(c.run_id)
            if existing is not None:
                version, promoted = existing
                if version.model != c.model:
                    raise Conflict(
                        f"run {c.run_id} is already registered for model "
                        f"{version.model!r}, not {c.model!r}"
                    )
                return Registration(
                    version,
                    promoted,
                    version.decision_reason,
                    "promoted" if promoted else _stored_outcome(version),
                )
            champion = tx.production(c.model)
            # why: a partition's first candidates must beat the fleet's global model, which
            # serves the partition until one of them is promoted
            benchmark = champion or (tx.production(model.fleet) if model.fleet else None)
            decision = decisions.decision_for(model, c, benchmark)
            if benchmark is not champion:
                decision = replace(
                    decision,
                    reason=f"against the fleet's global model {model.fleet} version "
                    f"{benchmark.version if benchmark else ''}: {decision.reason}",
                )
            mode = model.spec.policy.mode if decision.promote else ""
            waits = mode == "approval"
            shadows = mode == "shadow" and champion is not None  # no champion: nothing to beat
            reason = f"{decision.reason}; waiting for approval" if waits else decision.reason
            if shadows:
                reason += (
                    f"; runs as a shadow beside version {c.champion_version} "
                    "until live labels decide"
                )
            number = str(tx.next_version(c.model))
            version = ModelVersion(
                model=c.model,
                version=number,
                status=decisions.status_for(decision.promote, waits, shadows),
                artifact_uri=c.artifact_uri,
                artifact_sha256=c.artifact_sha256,
                profile_uri=c.profile_uri,
                metrics=dict(c.metrics),
                lineage=replace(c.lineage, model=c.model, version=number),
                decision_reason=reason,
                created_at=time.time(),
                run_id=c.run_id,
                slice_metrics=c.slice_metrics,
            )
            promoted = decision.promote and not waits and not shadows
            tx.insert_version(version, promoted=promoted)
            decisions.record_decision(
                tx, model, c, version, decision, waits, champion, shadows=shadows
            )
        self._on_commit()
        action = "promoted" if promoted else "rejected"
        record_decision(
            c.model, "pending_approval" if waits else ("shadowed" if shadows else action)
        )
        log.info(
            "version_registered",
            model=c.model,
            version=number,
            promoted=promoted,
            waiting_for_approval=waits,
            reason=reason,
        )
        outcome = "waiting" if waits or shadows else decision.outcome
        return Registration(
            version, promoted, reason, outcome, decision.rows_needed, decision.attention
        )

    def _model_or_new_partition(self, tx: RegistryTx, name: str) -> Model:
        """The model `name`; a partition model of a fleet is created on its first registration
        (its spec is the fleet's), within the fleet's partition limit."""
        found = tx.model(fleet.check_model_name(name))
        parsed = fleet.parse(name)
        if found is not None or parsed is None:
            return _need_model(tx, name)
        owner = _need_model(tx, parsed.fleet)
        columns = tuple(column for column, _ in parsed.values)
        if not owner.spec.partition_by:
            raise InvalidInput(
                f"model {parsed.fleet} is not a fleet (its spec has no partition_by), so it has "
                f"no partition {name!r}"
            )
        if columns != owner.spec.partition_by:
            raise InvalidInput(
                f"partition {name!r} names columns {list(columns)}; fleet {owner.name} "
                f"partitions by {list(owner.spec.partition_by)}"
            )
        count = tx.partition_count(owner.name)
        if count >= self._max_partitions:
            raise TooLarge(
                f"fleet {owner.name} has {count} partition models, the limit "
                f"(DRIFTLOOP_REGISTRY_MAX_PARTITIONS); {name!r} is not created"
            )
        tx.insert_model(
            Model(
                name=name,
                dataset=owner.dataset,
                target=owner.target,
                spec=owner.spec,
                created_at=time.time(),
                fleet=owner.name,
            )
        )
        tx.add_audit(name, "", "create", f"partition of fleet {owner.name}", {"fleet": owner.name})
        log.info("partition_created", model=name, fleet=owner.name)
        return _need_model(tx, name)

    def get_version(self, model: str, version: str) -> ModelVersion:
        with self._store.transaction() as tx:
            return _need_version(tx, model, version)

    def list_versions(self, model: str) -> list[ModelVersion]:
        with self._store.transaction() as tx:
            _need_model(tx, model)
            return tx.versions(model=model)

    def search_versions(self, model: str, status: str, correlation_id: str) -> list[ModelVersion]:
        if status and status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}: use one of {list(STATUSES)}")
        with self._store.transaction() as tx:
            return tx.versions(model=model, status=status, correlation_id=correlation_id)

    def production(self, model: str) -> ModelVersion:
        with self._store.transaction() as tx:
            _need_model(tx, model)
            current = tx.production(model)
        if current is None:
            raise NotFound(f"model {model} has no production version")
        return current

    def lineage(self, model: str, version: str) -> Lineage:
        return self.get_version(model, version).lineage

    # operator decisions
    def promote(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        _need_reason(reason)
        with self._store.transaction() as tx:
            target = _need_version(tx, model, version)
            champion = tx.production(model)
            if champion is not None and champion.version == target.version:
                raise Conflict(f"version {version} of model {model} is already in production")
            promoted = decisions.move_production(
                tx, target, champion, reason, actor or "operator", "promote", {}
            )
        self._on_commit()
        record_decision(model, "promoted")
        log.info("version_promoted", model=model, version=version, reason=reason)
        return promoted

    def reject(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        _need_reason(reason)
        with self._store.transaction() as tx:
            target = _need_version(tx, model, version)
            if target.status == "production":
                raise Conflict(
                    f"version {version} of model {model} is in production: promote "
                    "or roll back to another version before rejecting it"
                )
            decisions.clear_shadow(tx, target, reason, actor or "operator")
            tx.set_status(model, version, "rejected")
            tx.add_audit(
                model,
                version,
                "reject",
                reason,
                {"actor": actor or "operator"},
                target.lineage.correlation_id,
            )
            decisions.outbox(tx, events.ModelRejected(model=model, version=version, reason=reason))
        self._on_commit()
        record_decision(model, "rejected")
        log.info("version_rejected", model=model, version=version, reason=reason)
        return replace(target, status="rejected")

    def approve(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        """Promote a candidate that passed the policy in approval mode; its ModelPromoted event
        keeps the candidate's correlation id, so the trace runs from drift to deployment."""
        _need_reason(reason)
        with self._store.transaction() as tx:
            target = _need_version(tx, model, version)
            if target.status != "pending_approval":
                raise Conflict(
                    f"version {version} of model {model} is {target.status}, not "
                    "pending_approval: only candidates waiting for approval can be approved"
                )
            champion = tx.production(model)
            compared = target.lineage.parent_version
            if (champion.version if champion else "") != compared:
                raise Conflict(
                    f"version {version} was compared with champion {compared or 'none'} but "
                    f"production is now {champion.version if champion else 'none'}; retrain, "
                    "or use promote to override"
                )
            ids = {
                "correlation_id": target.lineage.correlation_id,
                "causation_id": target.lineage.causing_event_id,
            }
            promoted = decisions.move_production(
                tx, target, champion, reason, actor or "operator", "approve", ids
            )
        self._on_commit()
        record_decision(model, "approved")
        log.info("version_approved", model=model, version=version, reason=reason)
        return promoted

    def report_shadow_evidence(self, e: shadow.ShadowEvidence) -> shadow.EvidenceOutcome:
        """Shadow mode: judge live evidence; promote, reject, or wait (idempotent)."""
        with self._store.transaction() as tx:
            found = shadow.apply_evidence(tx, _need_model(tx, e.model), e)
        if found.decided:
            self._on_commit()
            record_decision(e.model, found.outcome)
        log.info(
            "shadow_evidence",
            model=e.model,
            version=e.version,
            outcome=found.outcome,
            labelled=e.labelled,
            reason=found.reason,
        )
        return found

    def history(self, model: str, version: str = "") -> History:
        with self._store.transaction() as tx:
            if version:
                _need_version(tx, model, version)
            else:
                _need_model(tx, model)
            return tx.history(model, version)

    def rollback(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        """Move production back to `version`, or (empty) to the version production had before."""
        _need_reason(reason)
        with self._store.transaction() as tx:
            _need_model(tx, model)
            champion = tx.production(model)
            if champion is None:
                raise Conflict(f"model {model} has no production version to roll back from")
            history = tx.alias_history(model)
            if not version:
                previous = history[-1]["previous_version"] if history else None
                if previous is None:
                    raise Conflict(
                        f"model {model} has no earlier production version to roll "
                        f"back to (version {champion.version} was the first)"
                    )
                version = str(previous)
            target = _need_version(tx, model, version)
            if target.version == champion.version:
                raise Conflict(f"version {version} of model {model} is already in production")
            if not any(str(h["version"]) == target.version for h in history):
                raise Conflict(
                    f"version {version} of model {model} was never in production; "
                    "use Promote to put it there"
                )
            promoted = decisions.move_production(
                tx, target, champion, reason, actor or "operator", "rollback", {}
            )
        self._on_commit()
        record_decision(model, "rolled_back")
        log.info(
            "version_rolled_back",
            model=model,
            version=version,
            previous_version=champion.version,
            reason=reason,
        )
        return promoted


def _need_model(tx: RegistryTx, name: str) -> Model:
    model = tx.model(fleet.check_model_name(name))
    if model is None:
        raise NotFound(f"model {name!r} does not exist; create it first")
    return model


def _need_version(tx: RegistryTx, model: str, version: str) -> ModelVersion:
    _need_model(tx, model)
    if not version:
        raise InvalidInput("version is empty")
    found = tx.version(model, version)
    if found is None:
        raise NotFound(f"model {model} has no version {version!r}")
    return found


def _same(field: str, given: str, in_spec: str, changeable: bool = True) -> str:
    """The value a spec and the request agree on (either may leave it out)."""
    if given and in_spec and given != in_spec:
        how = "" if changeable else " (it is fixed when the model is declared)"
        raise InvalidInput(
            f"spec field {field!r} is {in_spec!r} but the model's {field} is {given!r}{how}"
        )
    return given or in_spec


def _same_task(model: Model, spec: TrainingSpec) -> None:
    """A model with versions keeps its task: its champion could not be scored, nor compared,
    as the other task's candidate is (a classifier has no MAE)."""
    was = task_of(model.spec.task)
    if model.latest_version and spec.task != was:
        raise InvalidInput(
            f"spec field 'task': model {model.name} has {model.latest_version} versions "
            f"trained for {was}; its task cannot change to {spec.task} (declare a new model)"
        )


def _same_partitions(tx: RegistryTx, model: Model, spec: TrainingSpec) -> None:
    """A fleet with partition models keeps its partition columns: its partitions' names, data
    and versions are defined by them."""
    if spec.partition_by != model.spec.partition_by and tx.partition_count(model.name):
        raise InvalidInput(
            f"spec field 'partition_by': fleet {model.name} has "
            f"{tx.partition_count(model.name)} partition models by "
            f"{list(model.spec.partition_by)}; it cannot change (declare a new model)"
        )


def _need_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidInput("a reason is required: say why (it is recorded in the audit log)")


def _stored_outcome(version: ModelVersion) -> str:
    """The outcome of a registration asked for again (a retried RegisterVersion)."""
    if version.status in ("pending_approval", "shadow"):
        return "waiting"
    return "inconclusive" if version.decision_reason.startswith("inconclusive") else "rejected"
