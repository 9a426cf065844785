"""The stack: the embedded broker (or an external Kafka) and the six services as supervised
processes.

`run_foreground` is `driftloop up`: start the broker (unless kafka_bootstrap names one), create
the topics and check the broker takes driftloop's message size, start the services (several
instances of those `scale` names, see driftloop.shared.cli.stack.scale), write
<data-dir>/endpoints.json, supervise until SIGTERM/SIGINT, then stop everything. Killed itself
(SIGKILL, the OOM killer), `up` takes its processes along: each gets SIGTERM from the kernel
(driftloop.shared.cli.children), since nothing would supervise them any more.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.stack import scale
from driftloop.shared.cli.stack.broker import broker_argv, free_port, wait_for_port
from driftloop.shared.cli.stack.scale import Instance
from driftloop.shared.cli.stack.supervisor import ProcessSpec, Supervisor
from driftloop.shared.errors import Conflict, Unavailable
from driftloop.shared.grpc.client import sync_channel
from driftloop.shared.settings import SERVICES, CommonSettings

log = structlog.get_logger(__name__)
ENDPOINTS = "endpoints.json"


def endpoints_path(common: CommonSettings) -> Path:
    return common.data_dir / ENDPOINTS


def read_endpoints(common: CommonSettings) -> dict[str, Any] | None:
    try:
        return json.loads(endpoints_path(common).read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def settings_from_endpoints(common: CommonSettings) -> CommonSettings:
    """`common` with the addresses a running stack wrote to endpoints.json, when there is one."""
    found = read_endpoints(common)
    if not found:
        return common
    addresses = {n: s["grpc"] for n, s in found.get("services", {}).items()}
    return common.model_copy(
        update={
            "addresses": {**addresses, **common.addresses},
            "kafka_bootstrap": common.kafka_bootstrap or found.get("broker", ""),
        }
    )


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal check is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def recorded_pids(found: dict[str, Any]) -> dict[str, int]:
    """Every process endpoints.json records: `up` itself, the broker, every service instance."""
    pids = {"up": int(found.get("pid") or 0), "broker": int(found.get("broker_pid") or 0)}
    for name, svc in (found.get("services") or {}).items():
        pids[name] = int(svc.get("pid") or 0)
        for instance in svc.get("instances") or []:
            pids[instance["name"]] = int(instance.get("pid") or 0)
    return {name: pid for name, pid in pids.items() if pid > 0}


def instance_addresses(common: CommonSettings) -> dict[str, tuple[str, str]]:
    """{process name: (service, gRPC address)} of every service instance a running stack's
    endpoints.json lists; one per service at its configured address when there is none."""
    found = read_endpoints(common) or {}
    listed: dict[str, tuple[str, str]] = {}
    for name in SERVICES:
        svc = (found.get("services") or {}).get(name) or {}
        for instance in svc.get("instances") or [{"name": name, "grpc": common.address(name)}]:
            listed[instance["name"]] = (name, instance["grpc"])
    return listed


def _ours(pid: int) -> bool:
    """Whether `pid` still runs driftloop or its broker (a recorded pid may have been reused by
    an unrelated process since the stack wrote it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc: trust the record
    return any(word in cmdline for word in (b"driftloop", b"tansu", b"calfkit"))


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)  # poll: waiting for processes to exit
        left = [p for p in left if pid_alive(p)]
    return left


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Each stack process leads its own process group (its serving workers, if any, are in it)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def stop_recorded(found: dict[str, Any], *, grace: float = 60.0) -> list[str]:
    """`driftloop down`: SIGTERM the `up` process and give it `grace` seconds to stop the stack
    cleanly; then end every recorded process still running (SIGTERM, then SIGKILL), so that no
    service outlives a hung `up`. Returns the names that had to be ended here; raises
    Unavailable naming any process that is still running afterwards."""
    pids = {name: pid for name, pid in recorded_pids(found).items() if _ours(pid)}
    up = pids.pop("up", 0)
    forced = []
    if up:
        os.kill(up, signal.SIGTERM)
        if _wait_gone([up], grace):
            _signal_group(up, signal.SIGKILL)
            forced.append("up")
            _wait_gone([up], 5)
    left = {name: pid for name, pid in pids.items() if pid_alive(pid) and _ours(pid)}
    for pid in left.values():
        _signal_group(pid, signal.SIGTERM)
    stuck = set(_wait_gone(list(left.values()), 10))
    for name, pid in left.items():
        forced.append(name)
        if pid in stuck:
            _signal_group(pid, signal.SIGKILL)
    still = set(_wait_gone(list(left.values()) + ([up] if up else []), 5))
    if still:
        names = sorted(n for n, p in {**left, "up": up}.items() if p in still)
        raise Unavailable(f"processes still running after SIGKILL: {names} (pids {sorted(still)})")
    return forced


def _service_env(common: CommonSettings) -> dict[str, str]:
    """What the services need besides the environment they inherit (Kafka security settings
    among it)."""
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir.resolve()),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_BIND_HOST": common.bind_host,
        "DRIFTLOOP_CONNECT_HOST": common.connect_host,
    }
    if not common.kafka_bootstrap and common.kafka.idempotent is None:
        # why: the embedded broker refuses idempotent producers; said here, the services do
        # not each ask it and log the refusal
        env["DRIFTLOOP_KAFKA__IDEMPOTENT"] = "false"
    for name, value in common.ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(value)
    return env


def build_specs(
    common: CommonSettings, broker_binary: Path | None, instances: list[Instance] | None = None
) -> list[ProcessSpec]:
    """The broker's process (unless on an external Kafka) and every service instance's."""
    logs = common.data_dir / "logs"
    specs = []
    if not common.kafka_bootstrap:
        specs.append(
            ProcessSpec(
                "broker",
                broker_argv(common.ports.broker, common.connect_host, broker_binary),
                {},
                logs / "broker.log",
            )
        )
    env = _service_env(common)
    for instance in instances if instances is not None else scale.plan(common, free_port):
        argv = [sys.executable, "-m", f"driftloop.services.{instance.service}"]
        own = {**env, **scale.instance_env(common, instance)}
        specs.append(ProcessSpec(instance.name, argv, own, logs / f"{instance.name}.log"))
    return specs


def health_of(common: CommonSettings, service: str, address: str = "", timeout: float = 1.0) -> str:
    """The gRPC health status of a service ("SERVING", "NOT_SERVING", "UNREACHABLE"), at
    `address` when given (one instance of a scaled service)."""
    if address:
        common = common.model_copy(update={"addresses": {**common.addresses, service: address}})
    with sync_channel(common, service) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def wait_healthy(
    common: CommonSettings, timeout: float, alive: Any = None, tick: Any = None
) -> None:
    """Wait until every service instance (endpoints.json's, else one per service) answers
    SERVING; `tick` runs each round (e.g. supervision, so a service that crashes while the
    stack starts is restarted rather than waited on)."""
    deadline = time.monotonic() + timeout
    targets = instance_addresses(common)
    pending = set(targets)
    while pending:
        if tick is not None:
            tick()
        pending = {p for p in pending if health_of(common, *targets[p]) != "SERVING"}
        if not pending:
            return
        if alive is not None and not alive():
            raise Unavailable("the stack stopped while starting; see the logs in the data dir")
        if time.monotonic() > deadline:
            raise Unavailable(f"services not healthy after {timeout}s: {sorted(pending)}")
        time.sleep(0.2)  # poll: services still starting


def _endpoints(
    common: CommonSettings, sup: Supervisor, instances: list[Instance]
) -> dict[str, Any]:
    pids = sup.pids()
    host = common.connect_host
    listed: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVICES}
    for i in instances:
        listed[i.service].append(
            {
                "name": i.name,
                "grpc": f"{host}:{i.grpc_port}",
                "metrics": f"{host}:{i.metrics_port}",
                "pid": pids.get(i.name),
            }
        )
    return {
        "pid": os.getpid(),
        "data_dir": str(common.data_dir.resolve()),
        "started_at": time.time(),
        "broker": common.bootstrap(),
        "embedded_broker": not common.kafka_bootstrap,
        "broker_pid": pids.get("broker"),
        "services": {
            name: {
                "grpc": f"{host}:{common.ports.grpc(name)}",
                "metrics": f"{host}:{common.ports.metrics(name)}",
                "pid": pids.get(name),
                "instances": listed[name],
                **_workers(common, name),
            }
            for name in SERVICES
        },
    }


def _workers(common: CommonSettings, service: str) -> dict[str, int]:
    """Serving's worker count when `scale` sets it (its workers share one port and pid)."""
    if service == scale.WORKERS and common.scale.get(service, 1) > 1:
        return {"workers": common.scale[service]}
    return {}


def _write_endpoints(common: CommonSettings, sup: Supervisor, instances: list[Instance]) -> None:
    endpoints_path(common).write_text(json.dumps(_endpoints(common, sup, instances), indent=2))


RESTART_LAST_AFTER_BROKER_LOSS = ("serving",)
"""Restarted only once the others answer again, so serving keeps answering with what it has
loaded for as long as possible."""


def _recover_broker(common: CommonSettings, sup: Supervisor, processes: list[str]) -> None:
    """The memory-only broker died: start a fresh one, recreate the topics, restart every
    service (serving last).

    why: every consumer holds offsets into logs that no longer exist. A consumer whose position
    is past the new log's end waits silently until the new log grows past it, skipping every
    message before (rows acknowledged by ingestion would never be curated; serving would not
    see promotions or poison). The services are stopped before the new broker accepts traffic,
    so none reads it with a stale position; restarted, they find no committed offsets on the
    fresh broker and read from its start (serving reconciles production from the registry).
    """
    first = [p for p in processes if p not in RESTART_LAST_AFTER_BROKER_LOSS]
    last = [p for p in processes if p in RESTART_LAST_AFTER_BROKER_LOSS]
    log.warning("broker_lost", restarting=["broker", *first, *last])
    sup.stop(grace=5, order=list(reversed(first)))
    sup.restart_now(["broker"])
    wait_for_port(common.connect_host, common.ports.broker, timeout=30)
    asyncio.run(ensure_topics(common.kafka_connection()))
    sup.restart_now(first)
    try:
        wait_healthy(common, timeout=60, tick=sup.check)
    except Unavailable as exc:
        log.warning("services_slow_after_broker_loss", error=str(exc))
    sup.restart_now(last)


def run_foreground(
    common: CommonSettings, *, broker_binary: Path | None = None, on_ready: Any = None
) -> int:
    """`driftloop up`: run the stack until SIGTERM/SIGINT. Returns the exit code."""
    existing = read_endpoints(common)
    if existing and pid_alive(int(existing.get("pid", 0))):
        raise Conflict(
            f"a stack is already running from {common.data_dir} (pid "
            f"{existing['pid']}); run `driftloop down` first"
        )
    scale.check_scale(common.scale)
    common.data_dir.mkdir(parents=True, exist_ok=True)
    instances = scale.plan(common, free_port)
    processes = [i.name for i in instances]
    sup = Supervisor(build_specs(common, broker_binary, instances))
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if not common.kafka_bootstrap:
            sup.start("broker")
            wait_for_port(common.connect_host, common.ports.broker, timeout=30)
        asyncio.run(ensure_topics(common.kafka_connection()))
        asyncio.run(scale.check_partitions(common.kafka_connection(), common.scale))
        for name in processes:
            sup.start(name)
        _write_endpoints(common, sup, instances)
        wait_healthy(common, timeout=120, alive=lambda: not stopping, tick=sup.check)
        log.info(
            "stack_ready", data_dir=str(common.data_dir), endpoints=str(endpoints_path(common))
        )
        if on_ready is not None:
            on_ready()
        while not stopping:
            if not common.kafka_bootstrap and sup.exited("broker"):
                _recover_broker(common, sup, processes)
                restarted = ["broker"]
            else:
                restarted = sup.check()
            if restarted:
                _write_endpoints(common, sup, instances)
            time.sleep(0.2)  # poll: supervision tick
        return 0
    finally:
        log.info("stack_stopping")
        services_first = list(reversed(processes)) + (
            ["broker"] if not common.kafka_bootstrap else []
        )
        sup.stop(order=services_first)
        endpoints_path(common).unlink(missing_ok=True)
