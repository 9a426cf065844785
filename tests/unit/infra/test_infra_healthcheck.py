"""The container health probe: which service a container runs and what the probe answers.

The probe against a real gRPC server runs in tests/integration/infra/test_infra_stack.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.shared.cli.stack import healthcheck

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("argv", "service"),
    [
        (["python", "-m", "driftloop.services.registry"], "registry"),
        (["/sbin/docker-init", "--", "python", "-m", "driftloop.services.serving"], "serving"),
        (["python", "-m", "driftloop.services.serving.main"], "serving"),
        (["python", "-m", "driftloop.services.nothing"], None),
        (["driftloop", "up"], None),
        ([], None),
    ],
)
def test_service_from_cmdline(argv: list[str], service: str | None) -> None:
    assert healthcheck.service_from_cmdline(argv) == service


def test_pid1_argv_reads_nul_separated_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"python\0-m\0driftloop.services.training\0")
    assert healthcheck.pid1_argv(cmdline) == ["python", "-m", "driftloop.services.training"]
    assert healthcheck.pid1_argv(tmp_path / "missing") == []


def test_unknown_service_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["nothing"]) == 2
    assert "give one of" in capsys.readouterr().err
