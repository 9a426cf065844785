"""What `driftloop bench serving` prints: the flat --json keys, the ratios to --against and to the
null server, issue #20's criteria (reported, never asserted), and the tables.
"""

from __future__ import annotations

from typing import Any

KEYS = ("rps", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "failed")
OPTIONAL_KEYS = ("cpu_us_per_request",)
"""Present when the bench knew the server's process (driftloop's, the null server's)."""


def tag(point: dict[str, Any], primary_style: str) -> str:
    """`c32_rows1` for the primary request style, `c32_rows1_fp64_features` for the others."""
    ours = point["driftloop"]
    base = f"c{ours['concurrency']}_rows{ours['rows']}"
    style = point.get("style", primary_style)
    return base if style == primary_style else f"{base}_{style.replace('-', '_')}"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def flatten(result: dict[str, Any], against: str, primary_style: str) -> None:
    """Top-level keys: rps_c32_rows1, p50_ms_c1_rows1, against_..., null_..., ratios, criteria."""
    for point in result["points"]:
        ours, theirs, null = point["driftloop"], point.get("against"), point.get("null")
        name = tag(point, primary_style)
        for key in KEYS + OPTIONAL_KEYS:
            if key in ours:
                result[f"{key}_{name}"] = ours[key]
            if theirs is not None and key in theirs:
                result[f"against_{key}_{name}"] = theirs[key]
            if null is not None and key in null:
                result[f"null_{key}_{name}"] = null[key]
        if theirs is not None:
            result[f"ratio_rps_{name}"] = _ratio(ours["rps"], theirs["rps"])
            result[f"ratio_p50_{name}"] = _ratio(ours["p50_ms"], theirs["p50_ms"])
            result[f"ratio_p99_{name}"] = _ratio(ours["p99_ms"], theirs["p99_ms"])
        if null is not None:
            result[f"null_ratio_rps_{name}"] = _ratio(ours["rps"], null["rps"])
    if against:
        result["against"] = against
    if "swap" in result:
        swap = result["swap"]
        result["swap_failed_requests"] = swap["failed"]
        result["swap_max_window_p99_ms"] = max((s["p99_ms"] for s in swap["swaps"]), default=0.0)
        result["swap_max_latency_ms"] = max((s["max_ms"] for s in swap["swaps"]), default=0.0)
    result["criteria"] = criteria(result)


def criteria(r: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #20's bars on the primary request style; None where this run cannot tell."""

    def check(*keys: str) -> bool:
        return all(k in r and r[k] is not None for k in keys)

    out: dict[str, bool | None] = {
        "c1_rows1_p50_le_against": None,
        "c32_rows1_rps_ge_3x_against": None,
        "c32_rows1_p99_le_third_of_against": None,
        "c32_rows1_rps_ge_half_null": None,
        "c8_rows100_rows_per_s_ge_half_null": None,
        "swap_zero_failed": None,
    }
    if check("p50_ms_c1_rows1", "against_p50_ms_c1_rows1"):
        out["c1_rows1_p50_le_against"] = r["p50_ms_c1_rows1"] <= r["against_p50_ms_c1_rows1"]
    if check("rps_c32_rows1", "against_rps_c32_rows1"):
        out["c32_rows1_rps_ge_3x_against"] = r["rps_c32_rows1"] >= 3 * r["against_rps_c32_rows1"]
        out["c32_rows1_p99_le_third_of_against"] = (
            r["p99_ms_c32_rows1"] <= r["against_p99_ms_c32_rows1"] / 3
        )
    if check("rps_c32_rows1", "null_rps_c32_rows1"):
        out["c32_rows1_rps_ge_half_null"] = r["rps_c32_rows1"] >= 0.5 * r["null_rps_c32_rows1"]
    if check("rows_per_s_c8_rows100", "null_rows_per_s_c8_rows100"):
        out["c8_rows100_rows_per_s_ge_half_null"] = (
            r["rows_per_s_c8_rows100"] >= 0.5 * r["null_rows_per_s_c8_rows100"]
        )
    if "swap_failed_requests" in r:
        out["swap_zero_failed"] = r["swap_failed_requests"] == 0
    return out


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value else ""


def table(console: Any, result: dict[str, Any], against: str) -> None:
    from rich.table import Table

    title = f"driftloop serving, V2 gRPC ({result['machine_cpus']} CPUs"
    load = result.get("load_average")
    if load:
        title += f", load average {load[0]:.2f} at start"
    title += ")"
    if against:
        title += f" vs {against}"
    has_null = any(p.get("null") is not None for p in result["points"])
    out = Table(title=title)
    columns = ["server", "style", "conc", "rows", "req/s", "rows/s", "p50 ms", "p90 ms", "p99 ms"]
    columns += ["failed", "cpu µs/req"]
    if against:
        columns += ["req/s vs against", "p50 vs against", "p99 vs against"]
    if has_null:
        columns.append("req/s vs null")
    for col in columns:
        out.add_column(col, justify="left" if col in ("server", "style") else "right")
    for point in result["points"]:
        ours = point["driftloop"]
        for name in ("driftloop", "against", "null"):
            row = point.get(name)
            if row is None:
                continue
            cells = [
                name, point.get("style", ""), str(row["concurrency"]), str(row["rows"]),
                f"{row['rps']:.0f}", f"{row['rows_per_s']:.0f}", f"{row['p50_ms']:.2f}",
                f"{row['p90_ms']:.2f}", f"{row['p99_ms']:.2f}", str(row["failed"]),
                f"{row['cpu_us_per_request']:.0f}" if "cpu_us_per_request" in row else "",
            ]  # fmt: skip
            mine = name == "driftloop"
            if against:
                theirs = point.get("against") or {}
                cells += [
                    _x(_ratio(ours["rps"], theirs.get("rps", 0))) if mine else "",
                    _x(_ratio(ours["p50_ms"], theirs.get("p50_ms", 0))) if mine else "",
                    _x(_ratio(ours["p99_ms"], theirs.get("p99_ms", 0))) if mine else "",
                ]
            if has_null:
                null = point.get("null") or {}
                cells.append(_x(_ratio(ours["rps"], null.get("rps", 0))) if mine else "")
            out.add_row(*cells)
    console.print(out)
    if "swap" in result:
        _swap_table(console, result["swap"])
    shown = {k: v for k, v in result.get("criteria", {}).items() if v is not None}
    if shown:
        console.print(
            "issue #20 bars (primary style): "
            + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in shown.items())
        )


def _swap_table(console: Any, swap: dict[str, Any]) -> None:
    from rich.table import Table

    out = Table(
        title=(
            f"{len(swap['swaps'])} promotions under load: {swap['requests']} requests, "
            f"{swap['failed']} failed; steady p50 {swap['steady_p50_ms']:.2f} ms, "
            f"p99 {swap['steady_p99_ms']:.2f} ms"
        )
    )
    for col in ("version", "swap s", "requests", "failed", "p99 ms", "max ms"):
        out.add_column(col, justify="right")
    for s in swap["swaps"]:
        out.add_row(
            s["version"], f"{s['swap_seconds']:.2f}", str(s["requests"]), str(s["failed"]),
            f"{s['p99_ms']:.2f}", f"{s['max_ms']:.2f}",
        )  # fmt: skip
    console.print(out)
