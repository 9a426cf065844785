"""A service waits for its consumers' partitions however long the group join takes, and stops
waiting when a task fails or a stop signal comes (shared/runtime.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from driftloop.shared import runtime

pytestmark = pytest.mark.unit


def consumer(group: str) -> Any:
    return SimpleNamespace(ready=asyncio.Event(), group=group, topics=[f"{group}.topic"])


async def test_a_slow_join_is_waited_for_with_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "READY_WARN_S", 0.01)
    slow, quick = consumer("slow"), consumer("quick")
    quick.ready.set()
    idle = asyncio.create_task(asyncio.Event().wait())
    with capture_logs() as logs:
        waiting = asyncio.create_task(runtime._until_ready([slow, quick], [idle]))
        await asyncio.wait_for(_warned(logs), 5)
        assert not waiting.done()
        slow.ready.set()
        assert await asyncio.wait_for(waiting, 5) == set()
    warned = [e for e in logs if e["event"] == "consumers_not_ready_yet"]
    assert warned[0]["waiting"] == ["slow"]
    idle.cancel()


async def test_a_failed_task_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "READY_WARN_S", 0.01)

    async def crash() -> None:
        raise RuntimeError("consumer died")

    failing = asyncio.create_task(crash())
    never = consumer("never")
    done = await asyncio.wait_for(runtime._until_ready([never], [failing]), 5)
    assert done == {failing} and isinstance(failing.exception(), RuntimeError)


async def _warned(logs: list[dict[str, Any]]) -> None:
    while not any(e["event"] == "consumers_not_ready_yet" for e in logs):
        await asyncio.sleep(0.005)  # poll the captured log (bounded by the caller's wait_for)
