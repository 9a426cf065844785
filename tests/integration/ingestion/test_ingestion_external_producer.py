"""An external producer (confluent-kafka, i.e. librdkafka) writes JSON rows to the public topic
driftloop.ingest.json keyed by dataset; ingestion and validation run as real processes. The rows
are curated and the one malformed message is dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from support import read_events, start_process, stop_process, wait_until

from driftloop.shared.bus import envelope, topics
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.manifest import latest_manifest, manifest_head, read_snapshot
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

DATASET = "external"


def service_env(common: CommonSettings) -> dict[str, str]:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir.resolve()),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    for name, value in common.ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(value)
    return env


async def dead_letters(bootstrap: str, key: bytes, want: int) -> list[envelope.Envelope]:
    return await read_events(
        bootstrap,
        topics.DEADLETTER,
        lambda _, e: e.dead_letter.key == key,
        lambda found: len(found) >= want,
    )


def test_confluent_kafka_producer_rows_are_curated_and_bad_ones_dead_lettered(
    common: CommonSettings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    asyncio.run(ensure_topics(common.bootstrap()))
    procs = []
    try:
        for service in ("ingestion", "validation"):
            argv = [sys.executable, "-m", f"driftloop.services.{service}"]
            log = str(tmp_path / f"{service}.log")
            procs.append(start_process(argv, env=service_env(common), log_path=log))
            wait_for_port("127.0.0.1", common.ports.grpc(service), timeout=60)
        producer = Producer({"bootstrap.servers": common.bootstrap(), "linger.ms": 5})
        delivered: list[str] = []

        def on_delivery(err: object, msg: object) -> None:
            delivered.append("ok" if err is None else str(err))

        key = DATASET.encode()
        for i in range(20):
            row = {"n": i, "temp": 20.0 + i / 10, "room": f"r{i % 3}"}
            producer.produce(
                topics.INGEST_JSON, json.dumps(row).encode(), key, on_delivery=on_delivery
            )
        producer.produce(topics.INGEST_JSON, b'{"n": 99, "temp": ', key, on_delivery=on_delivery)
        rows = [{"n": 20 + i, "temp": 1.5, "room": "r0"} for i in range(5)]
        producer.produce(
            topics.INGEST_JSON, json.dumps(rows).encode(), key, on_delivery=on_delivery
        )
        assert producer.flush(30) == 0
        assert delivered == ["ok"] * 22

        store = open_object_store(common)
        wait_until(
            lambda: (h := manifest_head(store, DATASET)) is not None and h.total_rows == 25,
            60,
            "25 curated rows",
        )
        [letter] = asyncio.run(dead_letters(common.bootstrap(), key, 1))
        assert letter.dead_letter.source_topic == topics.INGEST_JSON
        assert "is not valid JSON" in letter.dead_letter.error
        assert letter.dead_letter.value == b'{"n": 99, "temp": '
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    manifest = latest_manifest(store, DATASET)
    assert manifest is not None and manifest.rows_rejected == 0
    assert sorted(read_snapshot(store, manifest)["n"].tolist()) == list(range(25))


async def label_events(bootstrap: str, model: bytes, want: int) -> list[envelope.Envelope]:
    """LabelBatch events keyed by `model` on driftloop.labels until `want` labels are seen."""
    return await read_events(
        bootstrap,
        topics.LABELS,
        lambda r, _: r.key == model,
        lambda found: sum(len(e.label_batch.request_ids) for e in found) >= want,
    )


def test_confluent_kafka_producer_labels_reach_the_labels_topic_and_bad_ones_dead_letter(
    common: CommonSettings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    asyncio.run(ensure_topics(common.bootstrap()))
    argv = [sys.executable, "-m", "driftloop.services.ingestion"]
    proc = start_process(
        argv, env=service_env(common), log_path=str(tmp_path / "ingestion-labels.log")
    )
    try:
        wait_for_port("127.0.0.1", common.ports.grpc("ingestion"), timeout=60)
        producer = Producer({"bootstrap.servers": common.bootstrap(), "linger.ms": 5})
        delivered: list[str] = []

        def on_delivery(err: object, msg: object) -> None:
            delivered.append("ok" if err is None else str(err))

        key = b"fraud-ext"
        for i in range(10):  # one object per message; labels as strings or numbers
            label = {"model": "fraud-ext", "request_id": f"r{i}", "label": i % 2}
            producer.produce(
                topics.LABELS_JSON, json.dumps(label).encode(), key, on_delivery=on_delivery
            )
        bad = json.dumps({"model": "fraud-ext", "request_id": "r99"}).encode()
        producer.produce(topics.LABELS_JSON, bad, key, on_delivery=on_delivery)
        many = [{"model": "fraud-ext", "request_id": f"r{10 + i}", "label": "1"} for i in range(5)]
        producer.produce(
            topics.LABELS_JSON, json.dumps(many).encode(), key, on_delivery=on_delivery
        )
        assert producer.flush(30) == 0
        assert delivered == ["ok"] * 12

        events = asyncio.run(label_events(common.bootstrap(), key, 15))
        pairs = {
            (rid, label)
            for e in events
            for rid, label in zip(e.label_batch.request_ids, e.label_batch.labels, strict=True)
        }
        assert pairs == {(f"r{i}", str(i % 2)) for i in range(10)} | {
            (f"r{10 + i}", "1") for i in range(5)
        }
        assert {e.label_batch.model for e in events} == {"fraud-ext"}
        [letter] = asyncio.run(dead_letters(common.bootstrap(), key, 1))
        assert letter.dead_letter.source_topic == topics.LABELS_JSON
        assert "lacks ['label']" in letter.dead_letter.error
        assert letter.dead_letter.value == bad
    finally:
        stop_process(proc)
