"""`driftloop status --json` and `driftloop config` print no secret given in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftloop.shared.cli.app import app
from driftloop.shared.cli.stack.broker import free_port

pytestmark = pytest.mark.integration

SECRETS = {
    "DRIFTLOOP_AUTH_TOKEN": "env-token-55aa77cc",
    "DRIFTLOOP_S3__ACCESS_KEY": "ENVACCESSKEY9911",
    "DRIFTLOOP_S3__SECRET_KEY": "env/secret+key=42",
}


def test_status_and_config_output_hold_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIFTLOOP_OBJECT_STORE", "s3")
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing there
    for service in ("INGESTION", "VALIDATION", "TRAINING", "REGISTRY", "SERVING", "MONITORING"):
        monkeypatch.setenv(f"DRIFTLOOP_PORTS__{service}", str(free_port()))
    runner = CliRunner()

    status = runner.invoke(app, ["status", "--json", "--data-dir", str(tmp_path)])
    assert status.exit_code == 1, "nothing runs: unhealthy"
    assert '"auth_token": "***"' in status.stdout and '"secret_key": "***"' in status.stdout
    config = runner.invoke(app, ["config"])
    assert config.exit_code == 0
    for value in SECRETS.values():
        assert value not in status.stdout + status.stderr
        assert value not in config.stdout
