"""The registry core: declare models, register versions under the promotion policy, move the
production alias by hand, and write every decision's events to the outbox in the same commit."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from driftloop.events.v1 import events_pb2
from driftloop.services.registry import decisions
from driftloop.services.registry.domain import (
    STATUSES,
    Candidate,
    History,
    Lineage,
    Model,
    ModelVersion,
    Registration,
    TrainingSpec,
    validate_spec,
    with_defaults,
)
from driftloop.services.registry.store import RegistryStore, RegistryTx
from driftloop.shared.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from driftloop.shared.names import check_key, check_name

log = structlog.get_logger(__name__)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Registry:
    """Every registry operation; each mutation is one store transaction, then `on_commit()`
    (the outbox publisher's wake-up) is called."""

    def __init__(self, store: RegistryStore, on_commit: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._on_commit = on_commit

    # models
    def create_model(self, name: str, dataset: str, target: str, spec: TrainingSpec) -> Model:
        check_name("model", name)
        check_name("dataset", dataset)
        if not target:
            raise InvalidInput("target column is empty: name the column the model predicts")
        spec = validate_spec(with_defaults(spec), target)
        model = Model(name=name, dataset=dataset, target=target, spec=spec, created_at=time.time())
        with self._store.transaction() as tx:
            if tx.model(name) is not None:
                raise AlreadyExists(f"model {name!r} already exists")
            tx.insert_model(model)
            tx.add_audit(
                name, "", "create", "model declared", {"dataset": dataset, "target": target}
            )
        log.info("model_created", model=name, dataset=dataset, target=target)
        return model

    def get_model(self, name: str) -> Model:
        with self._store.transaction() as tx:
            return _need_model(tx, name)

    def list_models(self) -> list[Model]:
        with self._store.transaction() as tx:
            return tx.models()

    # versions
    def register(self, c: Candidate) -> Registration:
        """Record a candidate and apply the policy; idempotent by run_id. In approval mode a
        passing candidate waits with status "pending_approval" until `approve`."""
        _check_candidate(c)
        with self._store.transaction() as tx:
            model = _need_model(tx, c.model)
            existing = tx.version_by_run(c.run_id)
            if existing is not None:
                version, promoted = existing
                if version.model != c.model:
                    raise Conflict(
                        f"run {c.run_id} is already registered for model "
                        f"{version.model!r}, not {c.model!r}"
                    )
                return Registration(version, promoted, version.decision_reason)
            champion = tx.production(c.model)
            decision = decisions.decision_for(model, c, champion)
            waits = decision.promote and model.spec.policy.mode == "approval"
            reason = f"{decision.reason}; waiting for approval" if waits else decision.reason
            number = str(tx.next_version(c.model))
            version = ModelVersion(
                model=c.model,
                version=number,
                status=decisions.status_for(decision.promote, waits),
                artifact_uri=c.artifact_uri,
                artifact_sha256=c.artifact_sha256,
                profile_uri=c.profile_uri,
                metrics=dict(c.metrics),
                lineage=replace(c.lineage, model=c.model, version=number),
                decision_reason=reason,
                created_at=time.time(),
                run_id=c.run_id,
            )
            promoted = decision.promote and not waits
            tx.insert_version(version, promoted=promoted)
            decisions.record_decision(tx, model, c, version, decision, waits, champion)
        self._on_commit()
        log.info(
            "version_registered",
            model=c.model,
            version=number,
            promoted=promoted,
            waiting_for_approval=waits,
            reason=reason,
        )
        return Registration(version, promoted, reason)

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
            tx.set_status(model, version, "rejected")
            tx.add_audit(
                model,
                version,
                "reject",
                reason,
                {"actor": actor or "operator"},
                target.lineage.correlation_id,
            )
            decisions.outbox(
                tx, model, events_pb2.ModelRejected(model=model, version=version, reason=reason)
            )
        self._on_commit()
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
        log.info("version_approved", model=model, version=version, reason=reason)
        return promoted

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
        log.info(
            "version_rolled_back",
            model=model,
            version=version,
            previous_version=champion.version,
            reason=reason,
        )
        return promoted


def _need_model(tx: RegistryTx, name: str) -> Model:
    model = tx.model(check_name("model", name))
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


def _need_reason(reason: str) -> None:
    if not reason.strip():
        raise InvalidInput("a reason is required: say why (it is recorded in the audit log)")


def _check_candidate(c: Candidate) -> None:
    check_name("model", c.model)
    if not c.run_id:
        raise InvalidInput("run_id is empty: registration is idempotent by run id")
    check_key(c.artifact_uri)
    if c.profile_uri:
        check_key(c.profile_uri)
    if not _SHA256.match(c.artifact_sha256):
        raise InvalidInput("artifact_sha256 must be 64 lowercase hex digits")
