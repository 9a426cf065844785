"""Who may call what: bearer tokens, each granting one role, checked by every gRPC server.

Roles: *ingest* (rows, labels, schemas), *operate* (models, specs, runs, approvals, rollbacks)
and *service* (what only training and monitoring call: RegisterVersion, ReportShadowEvidence).
DRIFTLOOP_AUTH_TOKEN is the operator's all-roles token; DRIFTLOOP_TOKENS__<ROLE> grants one role.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

Role = Literal["ingest", "operate", "service"]
INGEST: Role = "ingest"
OPERATE: Role = "operate"
SERVICE: Role = "service"
ROLES: tuple[Role, ...] = (INGEST, OPERATE, SERVICE)


class Verdict(Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    """No token, or one that no role knows."""
    FORBIDDEN = "forbidden"
    """A valid token of another role."""


@dataclass(frozen=True)
class Credentials:
    """The tokens a server accepts (or a client sends), by role."""

    admin: str | None = None
    """Grants every role."""
    by_role: dict[Role, str] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        """Whether mutating RPCs need a token at all (any token set)."""
        return self.admin is not None or bool(self.by_role)

    def token_for(self, role: Role | None) -> str | None:
        """What a client sends to call an RPC of `role` (None: the all-roles token)."""
        if role is not None and role in self.by_role:
            return self.by_role[role]
        return self.admin

    def verdict(self, needs: Role, authorization: str) -> Verdict:
        """May the caller whose `authorization` metadata is given call an RPC of role `needs`?"""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return Verdict.UNAUTHENTICATED
        granted = [r for r, token in self.by_role.items() if _same(given, token)]
        if (self.admin is not None and _same(given, self.admin)) or needs in granted:
            return Verdict.ALLOWED
        return Verdict.FORBIDDEN if granted else Verdict.UNAUTHENTICATED


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
