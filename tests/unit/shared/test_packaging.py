"""Packaging: every package folder is listed in pyproject (the import contracts are checked by
test_import_contracts.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


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
