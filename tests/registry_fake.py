"""An in-memory registry with the shared RegistryClient's API, for unit tests: the same records
and the same errors (NotFound, Conflict, Unauthenticated, Unavailable), no process and no port.

The contract suite (tests/integration/shared/test_registry_client_contract.py) runs one set of
assertions against this fake and against the real client talking to a real registry server, so
the two cannot drift apart. The policy is the simplest one: a candidate is promoted when there
is no production version, or when it beats the champion's metric by the model's margin.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from driftloop.shared import fleet
from driftloop.shared.errors import (
    AlreadyExists,
    Conflict,
    DriftloopError,
    InvalidInput,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from driftloop.shared.registry_types import (
    AliasChange,
    AuditRecord,
    Candidate,
    History,
    Model,
    ModelListing,
    ModelVersion,
    Registration,
    ShadowEvidence,
    ShadowVerdict,
    SpecVersion,
    TrainingSpec,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class _State:
    """What the fake server holds; shared by every client view of one fake (see `presenting`)."""

    models: dict[str, Model] = field(default_factory=dict)
    versions: dict[str, list[ModelVersion]] = field(default_factory=dict)
    specs: dict[str, list[SpecVersion]] = field(default_factory=dict)
    aliases: dict[str, list[AliasChange]] = field(default_factory=dict)
    audit: dict[str, list[AuditRecord]] = field(default_factory=dict)
    verdicts: list[ShadowVerdict] = field(default_factory=list)
    evidence: list[ShadowEvidence] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    failures: list[DriftloopError] = field(default_factory=list)
    down: bool = False
    revision: int = 0
    """Moves on every change to a model, its versions or aliases (Model.revision)."""


class FakeRegistry:
    """The RegistryClient API over in-memory state. `token`: the token the fake server requires
    on mutating calls; `presented`: the one this client sends (None: the right one)."""

    def __init__(self, *, token: str | None = None, presented: str | None = None) -> None:
        self.state = _State()
        self._token = token
        self._presented = token if presented is None else presented

    # test controls
    @property
    def calls(self) -> Counter[str]:
        """Calls that reached the fake, by registry API method name ("RegisterVersion")."""
        return self.state.calls

    @property
    def down(self) -> bool:
        return self.state.down

    @down.setter
    def down(self, value: bool) -> None:
        """While True every call raises Unavailable, as the real client does with no server."""
        self.state.down = value

    def fail_next(self, error: DriftloopError) -> None:
        """The next call raises `error` (queued: several calls, several errors)."""
        self.state.failures.append(error)

    def presenting(self, token: str) -> FakeRegistry:
        """Another client of the same fake server, sending `token`."""
        other = copy.copy(self)
        other._presented = token
        return other

    def put_model(self, model: Model) -> Model:
        """Seed a model (no auth, no checks), with its spec as spec version 1."""
        self.state.models[model.name] = model
        self.state.versions.setdefault(model.name, [])
        self.state.specs.setdefault(model.name, [SpecVersion(model.name, 1, model.spec)])
        self._touch(model.name)
        return self.state.models[model.name]

    def put_version(self, version: ModelVersion, alias: str = "") -> ModelVersion:
        """Seed a version; `alias` "production" or "shadow" points that alias at it."""
        if version.model not in self.state.models:
            self.put_model(Model(version.model, version.model, "label"))
        self.state.versions[version.model].append(version)
        if alias == "production":
            self._move_production(version, "seeded", "test", "promote")
        elif alias == "shadow":
            self._set_model(version.model, shadow_version=version.version)
            self._set_status(version.model, version.version, "shadow")
        return self._version(version.model, version.version)

    async def close(self) -> None:
        return None

    # the RegistryClient API
    async def create_model(
        self,
        name: str,
        dataset: str = "",
        target: str = "",
        *,
        spec: TrainingSpec | None = None,
        spec_yaml: str = "",
        author: str = "",
    ) -> Model:
        self._enter("CreateModel", mutating=True)
        if spec_yaml:
            raise NotImplementedError("the fake registry takes a TrainingSpec, not YAML")
        if not target:
            raise InvalidInput("target column is empty: name the column the model predicts")
        if name in self.state.models:
            raise AlreadyExists(f"model {name!r} already exists")
        model = Model(name, dataset or name, target, spec or TrainingSpec(), created_at=time.time())
        self.put_model(replace(model, spec_version=1))
        self._audit(name, "", "create", "model declared", author)
        return self.state.models[name]

    async def get_model(self, name: str) -> Model:
        self._enter("GetModel")
        return self._counted(self._model(name))

    async def list_models(self, fleet: str = "", *, brief: bool = False) -> list[Model]:
        return list((await self.model_listing(fleet=fleet, brief=brief)).models)

    async def model_listing(
        self, *, fleet: str = "", brief: bool = False, changed_after: int = 0
    ) -> ModelListing:
        self._enter("ListModels")
        if changed_after < 0:
            raise InvalidInput("changed_after must not be negative (0 lists every model)")
        if fleet:
            self._model(fleet)
        found = [
            self.state.models[n]
            for n in sorted(self.state.models)
            if (not fleet or self.state.models[n].fleet == fleet)
            and self.state.models[n].revision > changed_after
        ]
        if brief:  # as the registry: a partition without what it shares with its fleet
            found = [
                replace(m, dataset="", target="", spec=TrainingSpec(), spec_version=0)
                if m.fleet
                else m
                for m in found
            ]
        return ModelListing(tuple(self._counted(m) for m in found), self.state.revision)

    async def get_spec(self, model: str, number: int = 0) -> SpecVersion:
        self._enter("GetSpec")
        specs = self.state.specs[self._model(model).name]
        if number < 0 or number > len(specs):
            raise NotFound(f"model {model} has no spec version {number}")
        return specs[number - 1] if number else specs[-1]

    async def list_specs(self, model: str) -> list[SpecVersion]:
        self._enter("ListSpecs")
        return list(self.state.specs[self._model(model).name])

    async def set_spec(
        self,
        model: str,
        *,
        spec: TrainingSpec | None = None,
        spec_yaml: str = "",
        author: str = "",
        comment: str = "",
    ) -> SpecVersion:
        self._enter("SetSpec", mutating=True)
        if spec_yaml or spec is None:
            raise NotImplementedError("the fake registry takes a TrainingSpec, not YAML")
        specs = self.state.specs[self._model(model).name]
        if specs[-1].spec == spec:
            return specs[-1]
        specs.append(SpecVersion(model, len(specs) + 1, spec, author=author, comment=comment))
        self._set_model(model, spec=spec, spec_version=len(specs))
        return specs[-1]

    async def register_version(self, candidate: Candidate) -> Registration:
        self._enter("RegisterVersion", mutating=True)
        c = candidate
        model = self._model_or_new_partition(c.model)
        if not c.run_id:
            raise InvalidInput("run_id is empty: registration is idempotent by run id")
        if not _SHA256.match(c.artifact_sha256):
            raise InvalidInput("artifact_sha256 must be 64 lowercase hex digits")
        for v in self.state.versions[c.model]:
            if v.run_id == c.run_id:
                return Registration(v, v.status in ("production", "archived"), v.decision_reason)
        promote, reason = _decide(model, c, self._production(c.model))
        number = str(len(self.state.versions[c.model]) + 1)
        version = ModelVersion(
            model=c.model,
            version=number,
            status="candidate",
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
        self.state.versions[c.model].append(version)
        self._touch(c.model)
        self._audit(c.model, number, "register", reason, "policy")
        if promote:
            self._move_production(version, reason, "policy", "promote")
        else:
            self._set_status(c.model, number, "rejected")
        found = self._version(c.model, number)
        return Registration(found, promote, reason)

    async def get_version(self, model: str, version: str) -> ModelVersion:
        self._enter("GetVersion")
        return self._version(model, version)

    async def list_versions(self, model: str) -> list[ModelVersion]:
        self._enter("ListVersions")
        return list(self.state.versions[self._model(model).name])

    async def search_versions(
        self, *, model: str = "", status: str = "", correlation_id: str = ""
    ) -> list[ModelVersion]:
        self._enter("SearchVersions")
        return [
            v
            for name in sorted(self.state.versions)
            for v in self.state.versions[name]
            if (not model or v.model == model)
            and (not status or v.status == status)
            and (not correlation_id or v.lineage.correlation_id == correlation_id)
        ]

    async def production(self, model: str) -> ModelVersion | None:
        self._enter("GetProduction")
        return self._production(model) if model in self.state.models else None

    async def get_history(self, model: str, version: str = "") -> History:
        self._enter("GetHistory")
        if version:
            self._version(model, version)
        else:
            self._model(model)
        aliases = self.state.aliases.get(model, [])
        audit = self.state.audit.get(model, [])
        if version:
            aliases = [a for a in aliases if version in (a.version, a.previous_version)]
            audit = [r for r in audit if r.version == version]
        return History(tuple(aliases), tuple(audit))

    async def promote(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        self._enter("Promote", mutating=True)
        target = self._decision_target(model, version, reason)
        if target.status == "production":
            raise Conflict(f"version {version} of model {model} is already in production")
        return self._move_production(target, reason, actor or "operator", "promote")

    async def approve(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        self._enter("Approve", mutating=True)
        target = self._decision_target(model, version, reason)
        if target.status != "pending_approval":
            raise Conflict(f"version {version} of model {model} is {target.status}, not pending")
        return self._move_production(target, reason, actor or "operator", "approve")

    async def reject(self, model: str, version: str, reason: str, actor: str = "") -> ModelVersion:
        self._enter("Reject", mutating=True)
        target = self._decision_target(model, version, reason)
        if target.status == "production":
            raise Conflict(f"version {version} of model {model} is in production")
        if self.state.models[model].shadow_version == version:
            self._set_model(model, shadow_version="")  # a rejected shadow is no longer one
        self._audit(model, version, "reject", reason, actor or "operator")
        return self._set_status(model, version, "rejected")

    async def rollback(
        self, model: str, reason: str, version: str = "", actor: str = ""
    ) -> ModelVersion:
        self._enter("Rollback", mutating=True)
        moves = self.state.aliases.get(model, [])
        version = version or (moves[-1].previous_version if moves else "")
        if not version:
            raise Conflict(f"model {model} has no earlier production version to roll back to")
        target = self._decision_target(model, version, reason)
        if target.status == "production":
            raise Conflict(f"version {version} of model {model} is already in production")
        return self._move_production(target, reason, actor or "operator", "rollback")

    async def report_shadow_evidence(self, evidence: ShadowEvidence) -> ShadowVerdict:
        self._enter("ReportShadowEvidence", mutating=True)
        self.state.evidence.append(evidence)
        target = self._version(evidence.model, evidence.version)
        if target.status != "shadow":
            kind = {"production": "promoted", "rejected": "rejected"}.get(target.status, "stale")
            reason = f"version {target.version} is {target.status}, no longer the shadow"
            return ShadowVerdict(kind, reason, 0, target)
        if self.state.verdicts:
            return self.state.verdicts.pop(0)
        return ShadowVerdict("waiting", "not enough labelled requests yet", 0, target)

    # internals
    def _enter(self, method: str, *, mutating: bool = False) -> None:
        self.state.calls[method] += 1
        if self.state.failures:
            raise self.state.failures.pop(0)
        if self.state.down:
            raise Unavailable(f"registry {method} failed with UNAVAILABLE: the fake is down")
        if mutating and self._token is not None and self._presented != self._token:
            raise Unauthenticated(f"registry {method} failed with UNAUTHENTICATED: wrong token")

    def _model(self, name: str) -> Model:
        if name not in self.state.models:
            raise NotFound(f"model {name!r} does not exist; create it first")
        return self.state.models[name]

    def _model_or_new_partition(self, name: str) -> Model:
        """As the registry: a fleet's partition model appears on its first registration."""
        parsed = fleet.parse(name)
        if name in self.state.models or parsed is None:
            return self._model(name)
        owner = self._model(parsed.fleet)
        if tuple(c for c, _ in parsed.values) != owner.spec.partition_by:
            raise InvalidInput(f"{name!r} is not a partition of fleet {owner.name}")
        model = Model(name, owner.dataset, owner.target, owner.spec, fleet=owner.name)
        self.put_model(model)
        return model

    def _version(self, model: str, version: str) -> ModelVersion:
        for v in self.state.versions[self._model(model).name]:
            if v.version == version:
                return v
        raise NotFound(f"model {model} has no version {version!r}")

    def _production(self, model: str) -> ModelVersion | None:
        current = self._model(model).production_version
        return self._version(model, current) if current else None

    def _decision_target(self, model: str, version: str, reason: str) -> ModelVersion:
        if not reason.strip():
            raise InvalidInput("a reason is required: say why (it is recorded in the audit log)")
        return self._version(model, version)

    def _set_model(self, name: str, **changes: object) -> None:
        self.state.models[name] = replace(self.state.models[name], **changes)  # type: ignore[arg-type]
        self._touch(name)

    def _touch(self, name: str) -> None:
        self.state.revision += 1
        self.state.models[name] = replace(self.state.models[name], revision=self.state.revision)

    def _counted(self, model: Model) -> Model:
        """A fleet with its partition count, as the registry answers."""
        if model.fleet:
            return model
        count = sum(m.fleet == model.name for m in self.state.models.values())
        return replace(model, partitions=count)

    def _set_status(self, model: str, version: str, status: str) -> ModelVersion:
        versions = self.state.versions[model]
        for i, v in enumerate(versions):
            if v.version == version:
                versions[i] = replace(v, status=status)
                self._touch(model)
                return versions[i]
        raise NotFound(f"model {model} has no version {version!r}")

    def _move_production(
        self, target: ModelVersion, reason: str, actor: str, action: str
    ) -> ModelVersion:
        model = target.model
        previous = self.state.models[model].production_version
        if previous:
            self._set_status(model, previous, "archived")
        self._set_model(model, production_version=target.version)
        change = AliasChange("production", target.version, previous, reason, actor, time.time())
        self.state.aliases.setdefault(model, []).append(replace(change, action=action))
        self._audit(model, target.version, action, reason, actor)
        return self._set_status(model, target.version, "production")

    def _audit(self, model: str, version: str, action: str, reason: str, actor: str) -> None:
        details = json.dumps({"actor": actor})
        record = AuditRecord(time.time(), model, version, action, reason, details)
        self.state.audit.setdefault(model, []).append(record)


def _decide(model: Model, c: Candidate, champion: ModelVersion | None) -> tuple[bool, str]:
    metric = model.spec.policy.metric or "accuracy"
    if metric not in c.metrics:
        raise InvalidInput(f"candidate metrics lack {metric!r}; got {sorted(c.metrics)}")
    score = c.metrics[metric]
    if champion is not None and c.champion_version != champion.version:
        return False, f"champion is version {champion.version}, not {c.champion_version!r}"
    floor = model.spec.policy.floor
    if score < floor:
        return False, f"{metric} {score:.3f} < floor {floor:.3f}"
    if champion is None:
        return True, f"no champion; {metric} {score:.3f} >= floor {floor:.3f}"
    best = c.champion_metrics.get(metric, champion.metrics.get(metric, 0.0))
    margin = model.spec.policy.margin
    if score > best + margin:
        return True, f"{metric} {score:.3f} beats champion {best:.3f} by more than {margin}"
    return False, f"{metric} {score:.3f} does not beat champion {best:.3f} by {margin}"
