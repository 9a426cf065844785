"""infra/Dockerfile: hadolint (when installed) and the image conventions the issue asks for.

No Docker engine here: the build is checked statically, and the same `pip install .` plus
health probe run outside a container in tests/integration/infra/test_infra_stack.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_support import DOCKERFILE, ROOT

from driftloop.shared.settings import SERVICES, Ports

pytestmark = pytest.mark.unit


def hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def stages(text: str) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    found: list[list[str]] = [[]]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            found.append([])
        found[-1].append(line)
    return found


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (dev extra, x86_64 Linux)")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(hadolint()), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_a_pinned_slim_base() -> None:
    text = DOCKERFILE.read_text()
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert arg is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", arg.group(1)), "exact patch version"
    froms = [s[0] for s in stages(text)[1:]]
    assert froms == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE} AS runtime"]


def test_final_stage_has_no_build_tools_and_runs_unprivileged() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    body = "\n".join(final)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "COPY . "):
        assert tool not in body, tool
    assert "COPY --from=build /opt/driftloop /opt/driftloop" in final
    users = [line for line in final if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")


def test_healthcheck_asks_the_grpc_health_service() -> None:
    final = "\n".join(stages(DOCKERFILE.read_text())[-1])
    assert 'CMD ["python", "-m", "driftloop.shared.cli.stack.healthcheck"]' in final
    assert (ROOT / "shared" / "cli" / "stack" / "healthcheck.py").exists()


def test_exposes_the_default_ports() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    exposed = {int(p) for line in final if line.startswith("EXPOSE") for p in line.split()[1:]}
    ports = Ports()
    assert exposed == {ports.grpc(s) for s in SERVICES} | {ports.metrics(s) for s in SERVICES}


def test_build_context_holds_what_the_package_needs() -> None:
    build = "\n".join(stages(DOCKERFILE.read_text())[1])
    copied = set(re.findall(r"^COPY (?!--)(.+) \S+$", build, re.M))
    sources = {part for line in copied for part in line.split()}
    assert sources == {"pyproject.toml", "README.md", "shared", "services"}
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {f"!{s}" if "." in s else f"!{s}/" for s in sources} <= set(ignore)
