"""The layout's import contracts (pyproject.toml [tool.importlinter], DESIGN.md section 1) hold on
this checkout, and each one fails on a deliberately wrong import in a copy of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
LINT = ROOT / "tools" / "lint_imports.py"


def lint(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LINT), "--root", str(checkout)],
        capture_output=True,
        text=True,
        cwd=checkout,
        timeout=240,
        check=False,
    )


def test_this_checkout_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("services/serving/core/slot.py", "import grpc", "Service cores are transport-free"),
        (
            "services/validation/core/schema.py",
            "from driftloop.protos.events.v1 import events_pb2",
            "Service cores are transport-free",
        ),
        (
            "services/monitoring/core/drift.py",
            "from driftloop.services.monitoring.adapters import kafka",
            "Service cores are transport-free",
        ),
        (
            "shared/records.py",
            "from driftloop.services.serving.core import codec",
            "The library never imports a service",
        ),
        (
            "services/training/core/trainer.py",
            "from driftloop.services.registry.core import policy",
            "Services talk over Kafka and gRPC",
        ),
    ],
)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("shared", "services"):
        shutil.copytree(ROOT / part, checkout / part, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    target = checkout / module
    target.write_text(target.read_text() + f"\n{line}  # noqa: E402\n")

    result = lint(checkout)

    assert result.returncode == 1, result.stdout + result.stderr
    broken = [row for row in result.stdout.splitlines() if "BROKEN" in row]
    # a library module every service imports that imports a service also ties the services
    # together, so more than one contract may break; the one named must be among them
    assert any(row.startswith(contract) for row in broken), result.stdout
