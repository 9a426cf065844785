"""Tokens by role: each grants its role's RPCs only; the all-roles token grants every one; a
token no role knows is unauthenticated, a known token of another role is forbidden."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from driftloop.shared.auth import INGEST, OPERATE, SERVICE, Credentials, Verdict
from driftloop.shared.settings import CommonSettings, RoleTokens

pytestmark = pytest.mark.unit
CREDS = Credentials(admin="root", by_role={INGEST: "i", OPERATE: "o", SERVICE: "s"})


@pytest.mark.parametrize(
    ("needs", "header", "verdict"),
    [
        (SERVICE, "Bearer s", Verdict.ALLOWED),
        (SERVICE, "Bearer root", Verdict.ALLOWED),
        (SERVICE, "bearer s", Verdict.ALLOWED),
        (SERVICE, "Bearer i", Verdict.FORBIDDEN),
        (SERVICE, "Bearer o", Verdict.FORBIDDEN),
        (OPERATE, "Bearer s", Verdict.FORBIDDEN),
        (INGEST, "Bearer i", Verdict.ALLOWED),
        (INGEST, "Bearer x", Verdict.UNAUTHENTICATED),
        (INGEST, "", Verdict.UNAUTHENTICATED),
        (INGEST, "Basic i", Verdict.UNAUTHENTICATED),
        (INGEST, "Bearer ", Verdict.UNAUTHENTICATED),
        (INGEST, "Bearer i ", Verdict.UNAUTHENTICATED),
    ],
)
def test_verdicts(needs: str, header: str, verdict: Verdict) -> None:
    assert CREDS.verdict(needs, header) is verdict  # type: ignore[arg-type]


def test_a_role_without_a_token_is_closed_once_any_token_is_set() -> None:
    only_ingest = Credentials(by_role={INGEST: "i"})
    assert only_ingest.configured
    assert only_ingest.verdict(OPERATE, "Bearer i") is Verdict.FORBIDDEN
    assert not Credentials().configured


def test_clients_send_their_roles_token_else_the_all_roles_one(tmp_path: object) -> None:
    common = CommonSettings(
        auth_token=SecretStr("root"), tokens=RoleTokens(service=SecretStr("svc"))
    )
    creds = common.credentials()
    assert creds.token_for(SERVICE) == "svc"
    assert creds.token_for(OPERATE) == "root"
    assert creds.token_for(None) == "root"


def test_role_tokens_come_from_files_first(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "operate.token"  # type: ignore[operator]
    path.write_text("from-file\n")
    common = CommonSettings(tokens=RoleTokens(operate=SecretStr("from-env"), operate_file=path))
    assert common.credentials().by_role == {OPERATE: "from-file"}
