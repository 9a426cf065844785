"""Raw batches and manifest versions made by single-row messages on driftloop.ingest.json (#17).

Runs the embedded broker, ingestion and validation as real processes (the `driftloop bench
ingest` stack), sends N single-row JSON messages from P producers (as fast as they can, or at
R rows/s each), waits until the dataset's manifest accounts for every row and prints what it
took: raw batches curated, manifest versions, seconds from the last send to the last curated
row, and the validation log's size. `--services-path DIR` runs the services from another
checkout's import tree (PYTHONPATH), to measure the code before a change in the same session.

    .venv/bin/python benchmarks/json_topic_batches.py --messages 20000
    .venv/bin/python benchmarks/json_topic_batches.py --producers 4 --rate 100 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from driftloop.shared.cli.bench.ingest_run import running_stack, wait_accounted
from driftloop.shared.errors import Unavailable
from driftloop.shared.manifest import latest_manifest
from driftloop.shared.objectstore import LocalObjectStore

DATASET = "sensors"


async def produce(bootstrap: str, producers: int, per_producer: int, rate: float) -> float:
    """Send single-row messages; returns the monotonic time of the last acknowledged send."""
    from aiokafka import AIOKafkaProducer

    from driftloop.shared.bus import topics

    async def one(p: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            start, sends = time.monotonic(), []
            for i in range(per_producer):
                row = {"producer": p, "n": i, "temp": 20.0 + (i % 50) / 10, "room": f"r{i % 7}"}
                value = json.dumps(row).encode()
                sends.append(await producer.send(topics.INGEST_JSON, value, key=DATASET.encode()))
                if rate:
                    await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    await asyncio.gather(*(one(p) for p in range(producers)))
    return time.monotonic()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    per_producer = args.messages // args.producers
    if args.rate and args.seconds:
        per_producer = int(args.rate * args.seconds)
    total = per_producer * args.producers
    env = {"DRIFTLOOP_LOG_LEVEL": "info"}
    if args.services_path:
        env["PYTHONPATH"] = args.services_path
    for setting in args.set:
        name, _, value = setting.partition("=")
        env[f"DRIFTLOOP_INGESTION_{name.upper()}"] = value
    with tempfile.TemporaryDirectory(prefix="driftloop-json-batches-") as tmp:
        with running_stack(Path(tmp), env) as stack:
            start = time.monotonic()
            sent = asyncio.run(produce(stack.bootstrap, args.producers, per_producer, args.rate))
            try:
                wait_accounted(stack, DATASET, total, args.timeout)
            except Unavailable as exc:
                print(f"not every row was curated: {exc}", file=sys.stderr)  # noqa: T201
            done = time.monotonic()
            head = stack.head(DATASET)
            manifest = latest_manifest(LocalObjectStore(stack.root / "objects"), DATASET)
            assert manifest is not None and head is not None
            batches = sum(len(f.all_batch_ids()) for f in manifest.files)
            batches += len(manifest.rejected_batches)
            log_bytes = (stack.root / "validation.log").stat().st_size
    return {
        "messages": total,
        "producers": args.producers,
        "rate_per_producer": args.rate or None,
        "raw_batches": batches,
        "rows_per_batch": round(total / batches, 1),
        "manifest_versions": head.version,
        "rows_curated": head.total_rows,
        "all_rows_curated": head.total_rows + head.rows_rejected >= total,
        "send_seconds": round(sent - start, 2),
        "lag_after_last_send_s": round(done - sent, 2),
        "validation_log_kb": round(log_bytes / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="rows/s per producer (0: flat out)")
    parser.add_argument("--seconds", type=float, default=0.0, help="with --rate: how long")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for rows")
    parser.add_argument("--services-path", default="", help="PYTHONPATH of the services")
    parser.add_argument("--set", action="append", default=[], help="ingestion setting NAME=VALUE")
    parser.add_argument("--json", action="store_true", help="one JSON object instead")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))  # noqa: T201 - the benchmark's output
        return
    for name, value in result.items():
        print(f"{name:24} {value}")  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
