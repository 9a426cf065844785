"""A real Apache Kafka broker for the tests (KRaft, one node, the version docker-compose.yml pins),
run by driftloop's own launcher (driftloop.shared.cli.stack.kafka) from the jars `make kafka`
fetched, with the tests' log4j configuration: formatted, started on free ports, awaited, stopped,
removed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest
from confluent_kafka.admin import AdminClient
from support import wait_until

from driftloop.shared.cli.stack import kafka
from driftloop.shared.cli.stack.kafka import LocalKafka as KafkaBroker

__all__ = ["KafkaBroker", "delete_topics", "missing", "skip_or_fail", "start", "stop"]

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "tests" / "kafka" / "pom.xml"
KAFKA_VERSION = re.findall(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())[0]
"""The one the pom pins (and docker-compose.yml's image tag)."""
LIBS = REPO / ".bench" / "kafka" / "libs"
"""Where tests/kafka/fetch.sh puts the jars."""
LOG4J_CONFIG = REPO / "tests" / "kafka" / "log4j2.properties"
REQUIRE_ENV = "DRIFTLOOP_REQUIRE_KAFKA"
"""Set to 1 (CI does) to fail, not skip, the real-Kafka tests when Java or the jars are missing."""
MESSAGE_MAX_BYTES = kafka.MESSAGE_MAX_BYTES
"""The broker's message.max.bytes: driftloop's 16 MiB messages with their batch framing."""
HEAP = "512m"


def missing() -> str | None:
    """Why the broker cannot run here (one line), or None when it can."""
    reason = kafka.missing(LIBS)
    if reason is None:
        return None
    if shutil.which("java") is not None and shutil.which("mvn") is None:
        reason = "`mvn` not found on PATH, so `make kafka` cannot fetch the jars"
    return f"real Kafka {KAFKA_VERSION}: {reason}"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`, or fail when the environment requires real Kafka (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; required because {REQUIRE_ENV}=1", pytrace=False)
    pytest.skip(reason)


def start(
    workdir: Path,
    *,
    listeners: Mapping[str, str] = {},
    extra: Mapping[str, str] = {},
    format_args: Sequence[str] = (),
) -> KafkaBroker:
    """Format and start a broker in `workdir` (see driftloop.shared.cli.stack.kafka.start);
    the JVM tuned to start fast rather than to move bytes fast."""
    return kafka.start(
        workdir,
        libs=LIBS,
        log4j=LOG4J_CONFIG,
        listeners=listeners,
        extra=extra,
        format_args=format_args,
        heap=HEAP,
        fast_start=True,
    )


def stop(broker: KafkaBroker) -> None:
    """SIGTERM (a controlled shutdown), SIGKILL after a grace period; then remove the data."""
    broker.stop()


def delete_topics(bootstrap: str, timeout: float = 30.0) -> None:
    """Delete every topic but Kafka's own, and wait until the broker no longer lists them, so
    the next test creates driftloop's topics afresh (as services do on a new cluster).

    why not LocalKafka.delete_topics: that one runs an event loop of its own, and this runs in
    the teardown of fixtures of async tests too."""
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
