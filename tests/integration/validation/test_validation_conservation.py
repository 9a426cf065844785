"""Conservation and exactly-once with real processes: rows in = curated + rejected, also when the
validation process is killed with SIGKILL mid-stream and restarted, and when a producer retries
requests with the same batch ids (no row lost, none curated twice: distinct row ids)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import sys
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import read_events, start_process, stop_process, wait_until

from driftloop.protos.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc
from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.shared.bus import topics
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.manifest import latest_manifest, manifest_head, read_snapshot
from driftloop.shared.records import table_to_ipc
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

DATASET = "conserved"
ROWS_PER_REQUEST = 500
REQUESTS = 80
BAD_EVERY = 97
"""Rows whose id is a multiple of this carry a value above the declared maximum."""


def env_for(common: CommonSettings) -> dict[str, str]:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir.resolve()),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_JSON": "true",
        # why: small polls make validation take many steps, so the kill lands mid-stream
        "DRIFTLOOP_VALIDATION_POLL_BATCHES": "2",
        "DRIFTLOOP_INGESTION_BATCH_ROWS": str(ROWS_PER_REQUEST),
    }
    for name, value in common.ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(value)
    return env


def start(service: str, common: CommonSettings, log: Path) -> object:
    argv = [sys.executable, "-m", f"driftloop.services.{service}"]
    proc = start_process(argv, env=env_for(common), log_path=str(log))
    wait_for_port("127.0.0.1", common.ports.grpc(service), timeout=60)
    return proc


def request(first_id: int, batch_id: str) -> ingestion_pb2.IngestRequest:
    ids = np.arange(first_id, first_id + ROWS_PER_REQUEST)
    table = pa.table({"id": ids, "value": np.where(ids % BAD_EVERY == 0, 1e9, ids * 0.5)})
    return ingestion_pb2.IngestRequest(
        dataset=DATASET, arrow_ipc=table_to_ipc(table), batch_id=batch_id
    )


def send(common: CommonSettings, requests: list[ingestion_pb2.IngestRequest]) -> int:
    with grpc.insecure_channel(common.address("ingestion")) as channel:
        reply = ingestion_pb2_grpc.IngestionServiceStub(channel).IngestStream(
            iter(requests), timeout=60
        )
    return int(reply.rows_accepted)


def declare(common: CommonSettings) -> None:
    columns = [
        validation_pb2.ColumnSchema(name="id", type="int", required=True),
        validation_pb2.ColumnSchema(name="value", type="float", required=True, max=1e6),
    ]
    with grpc.insecure_channel(common.address("validation")) as channel:
        validation_pb2_grpc.ValidationServiceStub(channel).PutSchema(
            validation_pb2.DatasetSchema(dataset=DATASET, columns=columns), timeout=10
        )


def test_rows_are_conserved_across_a_validation_kill_and_producer_retries(
    common: CommonSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(common.bootstrap()))
    store = open_object_store(common)
    requests = [request(i * ROWS_PER_REQUEST, f"req-{i}") for i in range(REQUESTS)]
    half = REQUESTS // 2
    total = REQUESTS * ROWS_PER_REQUEST
    ingestion = start("ingestion", common, tmp_path / "ingestion.log")
    validation = start("validation", common, tmp_path / "validation.log")
    try:
        declare(common)
        assert send(common, requests[:half]) == half * ROWS_PER_REQUEST
        wait_until(lambda: _accounted(store) >= ROWS_PER_REQUEST, 60, "some rows curated")
        os.killpg(validation.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        validation.wait(10)  # type: ignore[attr-defined]
        at_kill = _accounted(store)
        assert at_kill < half * ROWS_PER_REQUEST, "the kill must land mid-stream"

        validation = start("validation", common, tmp_path / "validation-2.log")
        retries = requests[:3] + requests[half - 2 : half]  # a producer retrying with same ids
        sentinel = request(total, "sentinel")
        send(common, requests[half:] + retries + [sentinel])
        wait_until(lambda: _accounted(store) == total + ROWS_PER_REQUEST, 90, "every row accounted")
    finally:
        stop_process(validation)  # type: ignore[arg-type]
        stop_process(ingestion)  # type: ignore[arg-type]

    manifest = latest_manifest(store, DATASET)
    assert manifest is not None
    ids = read_snapshot(store, manifest)["id"].to_numpy()
    all_ids = np.arange(total + ROWS_PER_REQUEST)
    bad = all_ids[all_ids % BAD_EVERY == 0]
    assert len(ids) == len(np.unique(ids)), "no row curated twice"
    assert set(ids.tolist()) == set(all_ids.tolist()) - set(bad.tolist()), "no row lost"
    assert manifest.rows_rejected == len(bad)
    assert manifest.rows_in == total + ROWS_PER_REQUEST

    # every curated file reached driftloop.records.validated (by reference), also those whose
    # batches were curated just before the kill or sent again by the producer (at least once)
    keys = {f.key: f for f in manifest.files}
    sent = asyncio.run(
        read_events(
            common.bootstrap(),
            topics.RECORDS_VALIDATED,
            lambda _, e: e.type == "CuratedRows",
            lambda found: {e.curated_rows.file_key for e in found} >= keys.keys(),
        )
    )
    files = {e.curated_rows.file_key: e.curated_rows for e in sent}
    assert files.keys() == keys.keys(), "only curated files are sent"
    stored = {key: store.get(key) for key in files}
    for key, curated in files.items():
        assert curated.sha256 == keys[key].sha256 == hashlib.sha256(stored[key]).hexdigest()
        assert curated.byte_size == len(stored[key])
    published = pa.concat_tables(pq.read_table(io.BytesIO(d)) for d in stored.values())
    assert sorted(published["id"].to_pylist()) == sorted(ids.tolist())
    resent = [
        e.curated_rows.file_key for e in sent if e.curated_rows.batches[0].batch_id == "req-0"
    ]
    assert len(resent) >= 2, "the retried req-0 sent its file again"


def _accounted(store: object) -> int:
    head = manifest_head(store, DATASET)  # type: ignore[arg-type]
    return 0 if head is None else head.total_rows + head.rows_rejected
