"""Packaging: every package folder is listed in pyproject, and cores stay transport-free."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# Adapters may import transports: these names plus any `<peer>_client.py` (a gRPC client)
# and any `<topic>_events.py` (Kafka handlers for one more topic family).
ADAPTER_MODULES = {"grpc_api.py", "events.py", "main.py", "__main__.py", "settings.py"}
TRANSPORTS = {"grpc", "aiokafka", "faust", "minio", "grpc_health", "grpc_reflection"}


def _packages_on_disk() -> set[str]:
    roots = {
        "driftloop": ROOT / "shared/_gen/driftloop",
        "driftloop.shared": ROOT / "shared",
        "driftloop.services": ROOT / "services",
    }
    found = set()
    for prefix, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if "_gen" in rel.parts:
                continue
            found.add(".".join([prefix, *rel.parts]))
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert _packages_on_disk() == listed


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_service_cores_import_no_transport() -> None:
    offenders = {}
    for path in (ROOT / "services").rglob("*.py"):
        if path.name in ADAPTER_MODULES or path.name.endswith(("_client.py", "_events.py")):
            continue
        bad = _imports(path) & TRANSPORTS
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"core modules import transports: {offenders}"
