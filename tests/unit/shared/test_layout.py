"""The layout a newcomer reads: every service has the same shape, and the README's "Where things
are" tree names folders that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("ingestion", "validation", "training", "registry", "serving", "monitoring")


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_core_adapters_and_wiring(name: str) -> None:
    service = ROOT / "services" / name
    for part in ("core/__init__.py", "adapters/__init__.py", "adapters/grpc.py", "main.py"):
        assert (service / part).is_file(), f"services/{name}/{part} is missing"
    assert (service / "settings.py").is_file() and (service / "__main__.py").is_file()
    assert list((service / "core").glob("[!_]*.py")), f"services/{name}/core/ holds no module"


def _tree_folders() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1]
    block = section.split("```", 2)[1]
    folders, parents = [], []
    for line in block.splitlines():
        found = re.match(r"( *)(\S+/)(?= )", line)
        if not found:
            continue
        depth = len(found.group(1)) // 2
        # a placeholder folder stands for each of its kind: check it with one of them
        parents = [*parents[:depth], found.group(2).replace("<name>", "serving")]
        folders.append("".join(parents))
    return folders


def test_the_readme_tree_names_real_folders() -> None:
    folders = _tree_folders()
    assert "shared/bus/" in folders and "shared/cli/commands/" in folders
    missing = [f for f in folders if not (ROOT / f).is_dir()]
    assert not missing, f"README 'Where things are' names folders that do not exist: {missing}"
