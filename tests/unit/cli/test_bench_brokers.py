"""`--broker embedded|kafka|both` of the benches, and what the local Kafka launcher says and
writes before any process starts: which brokers a choice covers, the one-line reason when Java
or Kafka's jars are missing, the server.properties of the single KRaft node."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from driftloop.shared.cli.bench import brokers
from driftloop.shared.cli.bench.chaos import request_payload
from driftloop.shared.cli.stack import kafka
from driftloop.shared.errors import Unavailable

pytestmark = pytest.mark.unit


@pytest.fixture
def jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that looks like fetched jars, named by DRIFTLOOP_KAFKA_LIBS."""
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-4.1.1.jar").touch()
    (libs / "kafka_2.13-4.1.1-test.jar").touch()
    monkeypatch.setenv(kafka.LIBS_ENV, str(libs))
    return libs


@pytest.fixture
def java_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_each_choice_covers_its_brokers_in_order(jars: Path, java_on_path: None) -> None:
    assert brokers.brokers_of("embedded") == ["embedded"]
    assert brokers.brokers_of("kafka") == ["kafka"]
    assert brokers.brokers_of("both") == ["embedded", "kafka"]


def test_an_unknown_broker_is_refused_naming_the_choices() -> None:
    with pytest.raises(typer.BadParameter, match="embedded, kafka, both"):
        brokers.brokers_of("tansu")


def test_kafka_without_jars_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, java_on_path: None
) -> None:
    monkeypatch.setenv(kafka.LIBS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(typer.BadParameter, match="run `make kafka`"):
        brokers.brokers_of("both")
    assert brokers.brokers_of("embedded") == ["embedded"], "the embedded half needs no Kafka"
    with pytest.raises(Unavailable, match=r"jars are not in .*nowhere: run `make kafka`"):
        kafka.start(tmp_path / "broker")
    assert not (tmp_path / "broker").exists(), "nothing written before the check"


def test_kafka_without_java_names_java(jars: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = kafka.missing()
    assert reason is not None and "`java` not found" in reason


def test_the_version_comes_from_the_jars(jars: Path, java_on_path: None) -> None:
    assert kafka.missing() is None
    assert kafka.default_libs() == jars
    assert kafka.version(jars) == "4.1.1"


def test_one_node_is_broker_and_controller_and_takes_driftloops_messages(tmp_path: Path) -> None:
    text = kafka.server_properties(
        19092, 19093, tmp_path / "data", listeners={"SSL": ("SSL", 19094)}, extra={"a.b": "x\ny"}
    )
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    )
    assert props["log.dirs"] == str(tmp_path / "data")
    assert int(props["message.max.bytes"]) > 16 * 1024 * 1024
    assert props["auto.create.topics.enable"] == "false"
    assert props["a.b"] == "x\\ny", "a multi-line value escaped as java.util.Properties reads it"


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {kafka.cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


def test_the_chaos_ceiling_moves_messages_the_size_of_an_ingest_request() -> None:
    from driftloop.shared.bus import envelope
    from driftloop.shared.cli.chaos.harness import REQUEST_ROWS
    from driftloop.shared.records import ipc_to_table

    event = envelope.decode(request_payload())
    assert event.WhichOneof("payload") == "record_batch"
    assert event.record_batch.row_count == REQUEST_ROWS
    assert ipc_to_table(event.record_batch.arrow_ipc).num_rows == REQUEST_ROWS


def test_side_by_side_cells_read_like_figures() -> None:
    assert brokers._cell(None) == "-"
    assert brokers._cell(12345.6) == "12,346"
    assert brokers._cell(0.456) == "0.46"
    assert brokers._cell(1200) == "1,200"
    assert brokers._cell(True) == "True"
