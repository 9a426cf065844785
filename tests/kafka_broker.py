"""A real Apache Kafka broker for the tests (KRaft, one node, the version docker-compose.yml pins),
run from the jars `make kafka` fetched: formatted, started on free ports, awaited, stopped, removed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from support import start_process, stop_process, wait_until

from driftloop.shared.bus.topics import MAX_MESSAGE_BYTES
from driftloop.shared.cli.stack.broker import free_port

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "tests" / "kafka" / "pom.xml"
KAFKA_VERSION = re.findall(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())[0]
"""The one the pom pins (and docker-compose.yml's image tag)."""
LIBS = REPO / ".bench" / "kafka" / "libs"
"""Where tests/kafka/fetch.sh puts the jars; its `.fetched` stamp marks a complete fetch."""
LOG4J_CONFIG = REPO / "tests" / "kafka" / "log4j2.properties"
REQUIRE_ENV = "DRIFTLOOP_REQUIRE_KAFKA"
"""Set to 1 (CI does) to fail, not skip, the real-Kafka tests when Java or the jars are missing."""
MESSAGE_MAX_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024
"""why: the broker limits a whole record batch, which carries headers and framing besides the
value, so a 16 MiB message needs a little more than 16 MiB."""
CLUSTER_ID = "ZHJpZnRsb29wLXRlc3RzMQ"
"""Fixed (base64url of b"driftloop-tests1"): each session's broker has its own data dir anyway.
why not random: 1 random id in 64 starts with "-", which the storage tool reads as an option."""
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0


@dataclass
class KafkaBroker:
    bootstrap: str
    process: subprocess.Popen[bytes]
    workdir: Path
    """Holds server.properties, the logs and the data dir; the data dir is removed on stop."""

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "server.log"


def missing() -> str | None:
    """Why the broker cannot run here (one line), or None when it can."""
    if shutil.which("java") is None:
        return f"real Kafka: `java` not found on PATH (Kafka {KAFKA_VERSION} needs Java 17+)"
    if not (LIBS / ".fetched").is_file():
        if shutil.which("mvn") is None:
            return f"real Kafka: `mvn` not found on PATH, so Kafka {KAFKA_VERSION} is not fetched"
        return f"real Kafka: Kafka {KAFKA_VERSION} not fetched into {LIBS} (run `make kafka`)"
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`, or fail when the environment requires real Kafka (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; required because {REQUIRE_ENV}=1", pytrace=False)
    pytest.skip(reason)


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """A single node that is both broker and controller, configured like docker-compose.yml's."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        # driftloop creates its topics (with their partition counts) itself: ensure_topics
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(MESSAGE_MAX_BYTES),
        "replica.fetch.max.bytes": str(MESSAGE_MAX_BYTES),
        "group.initial.rebalance.delay.ms": "0",
        "offsets.topic.replication.factor": "1",
        # why: the first consumer group creates __consumer_offsets; 50 partitions (the default)
        # on one node cost start-up time and nothing here needs them
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def java_argv(workdir: Path, log_name: str, main: str, *args: str) -> list[str]:
    return [
        "java",
        "-Xmx512m",
        # why: C1 alone starts the JVM measurably faster (format ~20%, broker start ~0.5 s);
        # the tests' traffic is too small for C2's better code to pay off
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Ddriftloop.kafka.log={workdir / log_name}",
        "-cp",
        f"{LIBS}/*",
        main,
        *args,
    ]


def format_storage(workdir: Path, config: Path) -> None:
    """`kafka-storage.sh format`: the data dir gets meta.properties and the bootstrap metadata."""
    argv = java_argv(
        workdir, "format.log", "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"
    )
    done = subprocess.run(
        [*argv, str(config)], capture_output=True, text=True, timeout=START_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"formatting Kafka's storage failed: {done.stdout}{done.stderr}")


def start(workdir: Path) -> KafkaBroker:
    """Format and start a broker in `workdir`; returns once it serves metadata with itself in it
    (so it is registered and unfenced: topics can be created)."""
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    config = workdir / "server.properties"
    config.write_text(server_properties(port, controller_port, workdir / "data"))
    format_storage(workdir, config)
    argv = java_argv(workdir, "server.log", "kafka.Kafka", str(config))
    proc = start_process(argv, log_path=str(workdir / "stdout.log"))
    broker = KafkaBroker(f"127.0.0.1:{port}", proc, workdir)
    try:
        wait_ready(broker, START_TIMEOUT_S)
    except BaseException:
        stop(broker)
        raise
    return broker


def wait_ready(broker: KafkaBroker, timeout: float) -> None:
    """Until the broker lists itself in metadata; raises with its log if it exits or times out."""
    host, port = broker.bootstrap.split(":")
    deadline = time.monotonic() + timeout
    admin: AdminClient | None = None
    while True:
        if broker.process.poll() is not None:
            raise RuntimeError(f"Kafka exited with {broker.process.returncode}: {tail(broker)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka not ready after {timeout}s: {tail(broker)}")
        if admin is None and listening(host, int(port)):
            # why: not before the port is open, or librdkafka fills stderr with refusals
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        if admin is not None:
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except KafkaException:
                pass  # metadata not served yet
        time.sleep(0.05)  # poll


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def tail(broker: KafkaBroker, chars: int = 3000) -> str:
    logs = [broker.workdir / "stdout.log", broker.log]
    return "\n".join(p.read_text(errors="replace")[-chars:] for p in logs if p.is_file())


def stop(broker: KafkaBroker) -> None:
    """SIGTERM (a controlled shutdown), SIGKILL after a grace period; then remove the data."""
    stop_process(broker.process, grace=STOP_GRACE_S)
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def delete_topics(bootstrap: str, timeout: float = 30.0) -> None:
    """Delete every topic but Kafka's own, and wait until the broker no longer lists them, so
    the next test creates driftloop's topics afresh (as services do on a new cluster)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [
        name for name in admin.list_topics(timeout=timeout).topics if not name.startswith("__")
    ]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        future.result()
    wait_until(
        lambda: not set(names) & set(admin.list_topics(timeout=5).topics),
        timeout,
        "deleted topics gone from the broker's metadata",
    )
