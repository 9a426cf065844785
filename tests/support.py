"""Test helpers: wait on conditions with deadlines, start and always stop real processes."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from driftloop.shared.bus import envelope
from driftloop.shared.cli.stack.supervisor import die_with_parent


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last_error = exc
        time.sleep(0.1)  # poll
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}"
    )


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Async twin of wait_until; `predicate` may be sync or async."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last_error = exc
        await asyncio.sleep(0.1)  # poll
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}"
    )


def start_process(
    argv: list[str], *, env: dict[str, str] | None = None, log_path: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (so stop_process can end its children too)."""
    if log_path is None:
        return subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def stack_env(common: Any) -> dict[str, str]:
    """Environment pointing a driftloop process at `common`'s data dir and ports."""
    env = {"DRIFTLOOP_DATA_DIR": str(common.data_dir), "DRIFTLOOP_LOG_JSON": "true"}
    env.update(
        {f"DRIFTLOOP_PORTS__{k.upper()}": str(v) for k, v in common.ports.model_dump().items()}
    )
    return env


async def read_events(
    bootstrap: str,
    topic: str,
    keep: Callable[[ConsumerRecord, envelope.Envelope], bool],
    enough: Callable[[list[envelope.Envelope]], bool],
) -> list[envelope.Envelope]:
    """Events of `topic` from its start that `keep` accepts, until `enough` of them (60 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[envelope.Envelope] = []
    try:
        async with asyncio.timeout(60):
            while not enough(found):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    events = [(r, envelope.decode(r.value)) for r in records]
                    found += [e for r, e in events if keep(r, e)]
    finally:
        await consumer.stop()
    return found
