"""The `--broker both` table of `driftloop bench ingest`: each broker's figures side by side, and
a second raw ceiling of each whose producer pipelines the way ingestion's does."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def side_by_side(console: Any, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Both brokers' figures in one table, with a second raw ceiling of each broker whose
    producer buffers 4 MiB per partition as ingestion's does (the bench's own sends each 5000-row
    message alone, a round trip each: on Kafka that measures latency more than throughput)."""
    from driftloop.shared.cli.bench import brokers
    from driftloop.shared.cli.bench.ingest_run import BATCH_ROWS, bench_table

    payload = brokers.record_batch_message(bench_table(BATCH_ROWS))
    with tempfile.TemporaryDirectory(prefix="driftloop-bench-ceiling-") as tmp:
        pipelined = brokers.ceilings(payload, PIPELINED_MESSAGES, Path(tmp))
    e, k = results["embedded"], results["kafka"]
    figures = [
        (label, get(e), get(k))
        for label, get in (
            ("raw ceiling (bench's own), rows/s", lambda r: r["raw_ceiling_rows_per_s"]),
            ("raw ceiling (bench's own), MB/s", lambda r: r["raw_ceiling_mb_per_s"]),
            ("gRPC stream, rows/s", lambda r: r["grpc_rows_per_s"]),
            ("gRPC vs its ceiling", lambda r: r["grpc_ratio_to_ceiling"]),
            ("JSON topic, rows/s", lambda r: r["json_topic_rows_per_s"]),
            ("JSON topic vs its ceiling", lambda r: r["json_topic_ratio_to_ceiling"]),
            ("gRPC lag after send, s", lambda r: r["grpc"]["lag_s"]),
            (
                "CPU s per million rows, gRPC",
                lambda r: r["grpc"]["cpu_s_per_million_rows"]["total"],
            ),
            ("peak RSS MB, broker", lambda r: r["peak_rss_mb_by_process"].get("broker")),
            ("conservation", lambda r: "holds" if r["conservation_holds"] else "BROKEN"),
        )
    ]
    figures += [
        (
            "pipelined raw ceiling, rows/s",
            round(pipelined["embedded"]["messages_per_s"] * BATCH_ROWS),
            round(pipelined["kafka"]["messages_per_s"] * BATCH_ROWS),
        ),
        (
            "pipelined raw ceiling, MB/s",
            pipelined["embedded"]["mb_per_s"],
            pipelined["kafka"]["mb_per_s"],
        ),
    ]
    brokers.render_side_by_side(
        console, f"driftloop bench ingest, {e['rows']:,} rows per path", figures
    )
    return {"broker": "both", **results, "pipelined_raw_ceiling": pipelined, **brokers.machine()}


PIPELINED_MESSAGES = 200
"""Messages of the pipelined ceiling (5000 rows each: 1,000,000 rows)."""
