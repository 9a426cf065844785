"""What a RegisterVersion caller claims about a candidate, checked before anything is recorded:
names, the artifact and profile under the producing run's own prefix, a well-formed hash; and,
where the registry can read the object store, the artifact's SHA-256 computed from the stored
bytes and the metrics taken from the run record training wrote."""

from __future__ import annotations

import re
from typing import Protocol

from driftloop.services.registry.core.domain import Candidate
from driftloop.shared.artifacts import sha256
from driftloop.shared.errors import InvalidInput, NotFound
from driftloop.shared.fleet import check_model_name
from driftloop.shared.names import check_key, check_name, shown
from driftloop.shared.run_record import RunRecord, run_record_key

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_candidate(c: Candidate) -> None:
    check_model_name(c.model)
    if not c.run_id:
        raise InvalidInput("run_id is empty: registration is idempotent by run id")
    check_name("run id", c.run_id)
    _check_run_key("artifact_uri", c.artifact_uri, c)
    if c.profile_uri:
        _check_run_key("profile_uri", c.profile_uri, c)
    if not _SHA256.fullmatch(c.artifact_sha256):
        raise InvalidInput("artifact_sha256 must be 64 lowercase hex digits")


def _check_run_key(field: str, key: str, c: Candidate) -> None:
    """An artifact must lie under its producing run's own prefix, so that a caller cannot register
    another model's (or another run's) artifact under this model."""
    check_key(key)
    prefix = f"artifacts/{c.model}/{c.run_id}/"
    # why '%' only in the prefix: a partition model's name is percent-encoded once, canonically
    # (shared/fleet.py); anything after the prefix must not decode to another key
    if not key.startswith(prefix) or "%" in key[len(prefix) :]:
        raise InvalidInput(
            f"{field} {shown(key)} must lie under the run's own prefix {prefix!r} "
            "(no percent-encoding)"
        )


class StoredObjects(Protocol):
    """What the registry reads from the object store (driftloop.shared.objectstore)."""

    def get(self, key: str) -> bytes: ...


def verify_against_store(c: Candidate, store: StoredObjects) -> None:
    """The registry does not trust the caller's hash or metrics: it hashes the stored artifact
    itself and compares the metrics with the run record training wrote beside it."""
    try:
        data = store.get(c.artifact_uri)
    except NotFound as exc:
        raise InvalidInput(f"artifact {shown(c.artifact_uri)} is not in the object store") from exc
    actual = sha256(data)
    if actual != c.artifact_sha256:
        raise InvalidInput(
            f"artifact_sha256 {c.artifact_sha256[:12]}... does not match the stored artifact "
            f"{shown(c.artifact_uri)} ({actual[:12]}...)"
        )
    key = run_record_key(c.model, c.run_id)
    try:
        record = RunRecord.from_json(store.get(key))
    except NotFound as exc:
        raise InvalidInput(
            f"run {shown(c.run_id)} has no run record ({key}): only a training run's own "
            "candidate can be registered"
        ) from exc
    if record.metrics != c.metrics or record.champion_metrics != c.champion_metrics:
        raise InvalidInput(
            f"metrics {c.metrics} / champion {c.champion_metrics} differ from the run record "
            f"training wrote ({record.metrics} / {record.champion_metrics})"
        )
    if record.comparison != c.comparison:
        raise InvalidInput(
            "the paired comparison differs from the run record training wrote: only the "
            "run's own evidence can decide a promotion"
        )
