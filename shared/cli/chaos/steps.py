"""What every chaos fault works with: the stack handle, the result row, and the kill and
recovery steps most faults share."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop.shared.cli.chaos.harness import Harness
from driftloop.shared.cli.chaos.infra import MotoS3, pid_of, wait_new_pid
from driftloop.shared.cli.stack import embedded as stack

if TYPE_CHECKING:
    from driftloop.shared.cli.stack.kafka import LocalKafka


@dataclass
class Chaos:
    """What every fault gets: the client, the stack's settings, sizes, the S3 outage switch and
    the Kafka broker's process."""

    h: Harness
    rows: int
    """Rows ingested during each fault."""
    outage_s: float = 8.0
    timeout: float = 150.0
    s3: MotoS3 | None = None
    kafka: LocalKafka | None = None
    """The local Apache Kafka broker the stack runs on (None: the embedded broker)."""


@dataclass
class Row:
    fault: str
    injected: bool = False
    loop_closed: bool = False
    records_in: int = 0
    curated: int = 0
    rejected: int = 0
    lost: int = 0
    duplicates: int = 0
    recovery_s: float | None = None
    loop_s: float | None = None
    version: str = ""
    checks: dict[str, bool] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def survived(self) -> bool:
        return (
            self.injected
            and self.loop_closed
            and self.lost == 0
            and self.duplicates == 0
            and all(self.checks.values())
        )

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["survived"] = self.survived
        return out


Inject = Callable[[Chaos, Row], str | None]
"""Injects one fault (ingesting the fault's rows on the way); returns a training run id when it
started one that must close the loop, else None (a run is started afterwards)."""


def kill(c: Chaos, name: str, row: Row) -> int:
    pid = pid_of(c.h.common, name)
    if pid is None:
        raise RuntimeError(f"no live pid for {name}")
    os.kill(pid, signal.SIGKILL)
    row.injected = True
    row.info.setdefault("killed_at", round(time.monotonic(), 3))
    return pid


def recovered(c: Chaos, name: str, old: int, since: float) -> float:
    """Seconds from `since` until `name` was restarted and answers health checks again."""
    wait_new_pid(c.h.common, name, old, c.timeout)
    if name != "broker":
        deadline = time.monotonic() + c.timeout
        while stack.health_of(c.h.common, name) != "SERVING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not healthy again within {c.timeout:.0f}s")
            time.sleep(0.1)  # poll: the restarted service is starting
    return round(time.monotonic() - since, 2)


def in_background(work: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def wait_truthy(probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)  # poll
    return None
