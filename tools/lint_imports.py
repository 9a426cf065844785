"""Check the import contracts in pyproject.toml ([tool.importlinter]) with import-linter.

driftloop is one namespace mapped onto three folders (see pyproject.toml), which import-linter
cannot follow; this builds the namespace as one tree of symlinks in a temporary folder and lints
that. `python tools/lint_imports.py [--root DIR]` (DIR: a checkout, default this one); exit 0
when every contract is kept. `make lint` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def link_tree(checkout: Path, into: Path) -> Path:
    """`into`/driftloop with the root package, shared/, services/ and the generated protos."""
    pkg = into / "driftloop"
    pkg.mkdir()
    gen = checkout / "shared" / "_gen" / "driftloop"
    os.symlink(gen / "__init__.py", pkg / "__init__.py")
    os.symlink(gen / "protos", pkg / "protos")
    os.symlink(checkout / "shared", pkg / "shared")
    os.symlink(checkout / "services", pkg / "services")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    checkout = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="driftloop-lint-") as tmp:
        sys.path.insert(0, str(link_tree(checkout, Path(tmp))))
        from importlinter.cli import lint_imports

        return lint_imports(config_filename=str(checkout / "pyproject.toml"))


if __name__ == "__main__":
    sys.exit(main())
