"""Run one service process: metrics, topics, publisher, gRPC server, consumers, clean shutdown.

A service's main.py builds its parts and hands them to `serve()`; this is the lifecycle they
all share. SIGTERM/SIGINT stop it gracefully; a crashed consumer or task ends the process with
an error so the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import structlog
from prometheus_client import start_http_server

from driftloop.shared.bus.consumer import EventConsumer
from driftloop.shared.bus.publisher import EventPublisher
from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.grpc.server import (
    MAX_MESSAGE_BYTES,
    ServiceBinding,
    build_server,
    set_not_serving,
    set_serving,
)
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)

Hook = Callable[[], Coroutine[Any, Any, None]]
READY_WARN_S = 30.0
"""While consumers wait for their partitions, a warning this often (the service keeps waiting,
NOT_SERVING)."""


async def serve(
    name: str,
    common: CommonSettings,
    bindings: Sequence[ServiceBinding],
    *,
    publisher: EventPublisher | None = None,
    consumers: Sequence[EventConsumer] = (),
    background: Sequence[Hook] = (),
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    reuse_port: bool = False,
    max_request_bytes: int = MAX_MESSAGE_BYTES,
) -> None:
    """Run the service until SIGTERM/SIGINT (or until a consumer or background task fails).

    `reuse_port`: bind the gRPC port with SO_REUSEPORT (several processes share it). The port is
    then bound only after `on_start` has run: the kernel spreads new connections over every
    process bound to it, and one still starting would answer them UNAVAILABLE while its
    siblings are ready. Without it the port is bound first, so health checks can say
    NOT_SERVING during start-up."""
    start_http_server(common.ports.metrics(name), addr=common.bind_host)
    await ensure_topics(common.kafka_connection())
    if publisher is not None:
        await publisher.start()
    if reuse_port and on_start is not None:
        await on_start()
        on_start = None
    server, health, port = build_server(
        common,
        common.ports.grpc(name),
        bindings,
        reuse_port=reuse_port,
        max_request_bytes=max_request_bytes,
    )
    await server.start()
    names = [b.full_name for b in bindings]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    try:
        if on_start is not None:
            await on_start()
        tasks = [asyncio.create_task(c.run(), name=f"consumer:{c.group}") for c in consumers]
        tasks += [
            asyncio.create_task(job(), name=getattr(job, "__name__", "job")) for job in background
        ]
        stopper = asyncio.create_task(stop.wait())
        done = await _until_ready(consumers, [stopper, *tasks])
        if not done:
            # why: the imports and start-up above leave a large heap of long-lived objects
            # (numpy, pandas, pyarrow, grpc, protobuf modules); moving it to the permanent
            # generation spares every later full collection from walking it (~5 % of
            # validation's CPU went to gc)
            gc.collect()
            gc.freeze()
            await set_serving(health, names)
            log.info("service_started", grpc_port=port, metrics_port=common.ports.metrics(name))
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and t.exception() is not None]
        for task in failed:
            log.error("service_task_failed", task=task.get_name(), error=repr(task.exception()))
        if failed:
            raise SystemExit(1)
        if stopper not in done:
            log.error("service_task_ended", tasks=[t.get_name() for t in done])
            raise SystemExit(1)
        stopper.cancel()
    finally:
        log.info("service_stopping")
        await set_not_serving(health, names)
        for consumer in consumers:
            await consumer.stop()
        await server.stop(grace=5)
        if tasks:
            await asyncio.wait(tasks, timeout=5)  # let consumers finish their current batch
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if on_stop is not None:
            await on_stop()
        if publisher is not None:
            await publisher.stop()
        log.info("service_stopped")


async def _until_ready(
    consumers: Sequence[EventConsumer], running: Sequence[asyncio.Task[Any]]
) -> set[asyncio.Task[Any]]:
    """Wait until every consumer has its partitions. Returns early with the finished tasks
    when one of `running` ends first (a stop signal, a failed consumer or job). A slow group
    join is not an error: the service stays NOT_SERVING and says so every READY_WARN_S."""
    ready = asyncio.ensure_future(asyncio.gather(*(c.ready.wait() for c in consumers)))
    waited = 0.0
    try:
        while True:
            done, _ = await asyncio.wait(
                [ready, *running], timeout=READY_WARN_S, return_when=asyncio.FIRST_COMPLETED
            )
            if ready in done:
                return set()
            if done:
                return {t for t in running if t in done}
            waited += READY_WARN_S
            waiting = [c.group or ",".join(c.topics) for c in consumers if not c.ready.is_set()]
            log.warning("consumers_not_ready_yet", waited_s=waited, waiting=waiting)
    finally:
        ready.cancel()
