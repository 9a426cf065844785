"""The checked-in generated code must be exactly what `make protos` produces from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def _generated_files(root: Path) -> list[Path]:
    """Generated sources under `root` (compiled caches are not part of the comparison)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*_pb2*")
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    )


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    generated = _generated_files(tmp_path)
    checked_in = _generated_files(ROOT / "shared/_gen")
    assert generated == checked_in, "generated file set differs: run `make protos`"
    stale = [
        str(p)
        for p in generated
        if not filecmp.cmp(tmp_path / p, ROOT / "shared/_gen" / p, shallow=False)
    ]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


def test_v2_inference_proto_is_wire_compatible() -> None:
    from driftloop.protos.inference.v2 import grpc_predict_v2_pb2 as v2

    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    fields = {f.name: f.number for f in v2.ModelInferRequest.DESCRIPTOR.fields}
    assert fields == {
        "model_name": 1,
        "model_version": 2,
        "id": 3,
        "parameters": 4,
        "inputs": 5,
        "outputs": 6,
        "raw_input_contents": 7,
    }
    contents = {f.name: f.number for f in v2.InferTensorContents.DESCRIPTOR.fields}
    assert contents["fp64_contents"] == 7 and contents["bytes_contents"] == 8
