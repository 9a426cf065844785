"""What a RegisterVersion caller claims about a candidate, checked before anything is recorded:
names, the artifact and profile under the producing run's own prefix, a well-formed hash."""

from __future__ import annotations

import re

from driftloop.services.registry.core.domain import Candidate
from driftloop.shared.errors import InvalidInput
from driftloop.shared.names import check_key, check_name, shown

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_candidate(c: Candidate) -> None:
    check_name("model", c.model)
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
    if not key.startswith(prefix) or "%" in key:
        raise InvalidInput(
            f"{field} {shown(key)} must lie under the run's own prefix {prefix!r} "
            "(no percent-encoding)"
        )
