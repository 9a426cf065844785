"""Foreign clients against serving's V2 gRPC API: benchmarks/foreign_client/check.py runs the
unmodified tritonclient (and the KServe SDK when installed) from their own venv against a live
server holding a mixed-feature and an all-numeric classifier, and a regressor (FP64 answers)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_models import make_pipeline, make_regressor, serving_in_thread

from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.cli.bench.serving_stack import MODEL, train_bench_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
VENV_PYTHON = REPO / ".bench" / "foreign-client-venv" / "bin" / "python"
CHECK = REPO / "benchmarks" / "foreign_client" / "check.py"
SETUP = "benchmarks/foreign_client/setup.sh"
REGRESSOR = "price"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """Serving's V2 servicer (batching on) on a free port, in a background thread's loop."""
    slot = ModelSlot()
    mixed = make_pipeline()
    slot.swap(LoadedModel("churn", "1", mixed, artifacts.signature(mixed), "sha"))
    numeric, _ = train_bench_model()
    slot.swap(LoadedModel(MODEL, "1", numeric, artifacts.signature(numeric), "sha"))
    regressor = make_regressor()
    slot.swap(LoadedModel(REGRESSOR, "1", regressor, artifacts.signature(regressor), "sha"))
    service = InferenceService(slot, batching=BatchPolicy(max_batch_size=64))
    with serving_in_thread(service) as address:
        yield address


def test_unmodified_tritonclient_and_kserve_sdk(address: str) -> None:
    if not VENV_PYTHON.exists():
        pytest.skip(f"foreign-client venv missing: run `{SETUP}` (WITH_KSERVE=1 adds KServe)")
    done = subprocess.run(
        [
            *(str(VENV_PYTHON), str(CHECK), "--url", address),
            *("--model", "churn", "--model", MODEL, "--model", REGRESSOR),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "FAIL" not in output and "PASSED: 0 failed" in output, output
    assert output.count("ok   tritonclient infer") >= 2 * 6 + 4, output
    assert "ok   tritonclient infer per-feature: prediction FP64 [N]" in output, output
    assert "ok   tritonclient infer [N, F] BYTES: same prediction" in output, output
    if "skip kserve" not in output:
        assert output.count("ok   kserve infer") == 2 * 3 + 2, output
        assert "ok   kserve infer: prediction FP64 [N]" in output, output
        assert "ok   kserve checks" in output, output
