"""`driftloop bench serving`'s report: flat --json keys per request style, ratios to the other
server and to the null server, and issue #20's bars computed from them (reported, not asserted
by the bench); plus the request styles the load client builds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftloop.shared.cli.bench.serving_load import infer_request
from driftloop.shared.cli.bench.serving_report import flatten

pytestmark = pytest.mark.unit
FP32 = "fp32-tensor"


def row(concurrency: int, rows: int, rps: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "concurrency": concurrency, "rows": rows, "rps": rps, "rows_per_s": rps * rows,
        "p50_ms": p50, "p90_ms": p50, "p99_ms": p99, "failed": 0,
    }  # fmt: skip


def point(style: str, ours: Any, theirs: Any, null: Any) -> dict[str, Any]:
    return {"style": style, "driftloop": ours, "against": theirs, "null": null}


def test_keys_ratios_and_criteria() -> None:
    result: dict[str, Any] = {
        "points": [
            point(FP32, row(1, 1, 500, 1.5, 3), row(1, 1, 400, 2.2, 4), row(1, 1, 1600, 0.5, 1)),
            point(FP32, row(32, 1, 3000, 9, 20), row(32, 1, 670, 40, 84), row(32, 1, 5700, 5, 12)),
            point(FP32, row(8, 100, 1000, 7, 30), None, row(8, 100, 2100, 3, 6)),
            point("fp64-features", row(1, 1, 450, 1.7, 3.5), row(1, 1, 380, 2.4, 5), None),
        ],
        "swap": {"failed": 0, "swaps": [{"p99_ms": 9.0, "max_ms": 20.0}]},
    }  # fmt: skip
    flatten(result, "127.0.0.1:1", "fp32-tensor")
    assert result["p50_ms_c1_rows1"] == 1.5 and result["against_p50_ms_c1_rows1"] == 2.2
    assert result["null_rps_c32_rows1"] == 5700
    assert result["null_rows_per_s_c8_rows100"] == 210_000
    assert result["ratio_rps_c32_rows1"] == pytest.approx(3000 / 670)
    assert result["null_ratio_rps_c8_rows100"] == pytest.approx(1000 / 2100)
    assert result["p50_ms_c1_rows1_fp64_features"] == 1.7
    assert "against_rps_c8_rows100" not in result
    assert result["criteria"] == {
        "c1_rows1_p50_le_against": True,
        "c32_rows1_rps_ge_3x_against": True,
        "c32_rows1_p99_le_third_of_against": True,
        "c32_rows1_rps_ge_half_null": True,
        "c8_rows100_rows_per_s_ge_half_null": False,
        "swap_zero_failed": True,
    }


def test_without_peers_the_criteria_are_unknown() -> None:
    result: dict[str, Any] = {"points": [point("fp32-tensor", row(1, 1, 500, 1.5, 3), None, None)]}
    flatten(result, "", "fp32-tensor")
    assert set(result["criteria"].values()) == {None}


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_tensor_and_per_feature_requests_carry_the_same_rows(datatype: str) -> None:
    tensor = infer_request("m", 3, 4, seed=1, datatype=datatype, style="tensor")
    features = infer_request("m", 3, 4, seed=1, datatype=datatype, style="features")
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    [single] = tensor.inputs
    assert (single.name, single.datatype, list(single.shape)) == ("input-0", datatype, [3, 4])
    matrix = np.array(getattr(single.contents, field)).reshape(3, 4)
    assert [t.name for t in features.inputs] == ["f0", "f1", "f2", "f3"]
    columns = np.column_stack([np.array(getattr(t.contents, field)) for t in features.inputs])
    np.testing.assert_array_equal(matrix, columns)
    assert features.parameters["content_type"].string_param == "pd"
    with pytest.raises(ValueError, match="datatype"):
        infer_request("m", 1, 1, datatype="INT8")


def test_server_cpu_per_request_is_flattened_when_measured() -> None:
    ours = {**row(8, 100, 1300, 6, 10), "cpu_us_per_request": 850.0}
    null = {**row(8, 100, 4400, 2, 3), "cpu_us_per_request": 240.0}
    result: dict[str, Any] = {"points": [point(FP32, ours, None, null)]}
    flatten(result, "", FP32)
    assert result["cpu_us_per_request_c8_rows100"] == 850.0
    assert result["null_cpu_us_per_request_c8_rows100"] == 240.0
    assert "against_cpu_us_per_request_c8_rows100" not in result


def test_points_option_parses_clients_by_rows_and_refuses_the_rest() -> None:
    import typer

    from driftloop.shared.cli.bench.serving import _points

    assert _points("8x100, 32X1") == [(8, 100), (32, 1)]
    for bad in ("8", "x100", "0x1", "8x", "ax1"):
        with pytest.raises(typer.BadParameter, match="CLIENTSxROWS"):
            _points(bad)


def test_cpu_seconds_counts_a_process_and_its_children() -> None:
    import os

    from driftloop.shared.cli.bench.serving import _cpu_seconds

    assert _cpu_seconds(0) == 0.0
    before = _cpu_seconds(os.getpid())
    sum(i * i for i in range(200_000))  # burn a little CPU in this process
    assert _cpu_seconds(os.getpid()) > before
    assert _cpu_seconds(2**22 + 12345) == 0.0  # no such process
