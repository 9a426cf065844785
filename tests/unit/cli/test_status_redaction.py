"""Secrets (bearer token, S3 keys) never appear in `driftloop status` reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftloop.shared.cli.commands.status import REDACTED, config_summary, redact, secrets_of
from driftloop.shared.settings import CommonSettings, S3Settings

pytestmark = pytest.mark.unit

TOKEN = "tok-3f9c2a71d4e8"
ACCESS = "AKIACHAOSACCESS1"
SECRET = "s3cr3t/Key+With=Chars"


def _common(tmp_path: Path) -> CommonSettings:
    return CommonSettings(
        data_dir=tmp_path,
        auth_token=TOKEN,
        object_store="s3",
        s3=S3Settings(endpoint="127.0.0.1:9", access_key=ACCESS, secret_key=SECRET),
    )


def test_config_summary_names_the_controls_but_not_the_secrets(tmp_path: Path) -> None:
    summary = config_summary(_common(tmp_path))
    text = json.dumps(summary)
    assert TOKEN not in text and ACCESS not in text and SECRET not in text
    assert summary["auth_token"] == REDACTED and summary["s3"]["secret_key"] == REDACTED
    assert summary["s3"]["endpoint"] == "127.0.0.1:9"


def test_redact_reaches_secrets_inside_any_string(tmp_path: Path) -> None:
    report = {
        "services": {"registry": {"status": f"error: Bearer {TOKEN} refused"}},
        "errors": [f"s3://{ACCESS}:{SECRET}@host", ("tuple", TOKEN)],
        TOKEN: 1,
        "count": 3,
    }
    cleaned = json.dumps(redact(report, secrets_of(_common(tmp_path))))
    for secret in (TOKEN, ACCESS, SECRET):
        assert secret not in cleaned
    assert cleaned.count(REDACTED) == 5


def test_token_file_is_redacted_too(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-a-file-7788\n")
    common = CommonSettings(data_dir=tmp_path, auth_token_file=path)
    assert "from-a-file-7788" in secrets_of(common)
    assert config_summary(common)["auth_token"] == REDACTED


def test_short_secrets_do_not_blank_the_report(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path, auth_token="abc")
    assert "abc" not in secrets_of(common)
