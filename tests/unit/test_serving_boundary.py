"""The serving core stays transport-free: no grpc, aiokafka, faust or minio, no adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SERVING = Path(__file__).resolve().parents[2] / "services" / "serving"
CORE = ["slot.py", "codec.py", "core.py", "deployment.py", "prediction_log.py", "metrics.py"]
FORBIDDEN = {"grpc", "aiokafka", "faust", "minio"}
ADAPTERS = {"grpc_api", "events", "reconcile", "converters", "main", "inference_events", "v2_json"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_transport(module: str) -> None:
    names = imported(SERVING / module)
    assert not {n for n in names if n.split(".")[0] in FORBIDDEN}
    assert not {
        n
        for n in names
        if n.startswith("driftloop.services.serving.") and n.split(".")[3] in ADAPTERS
    }
    assert not {n for n in names if n.endswith(("_pb2", "_pb2_grpc"))}
