"""The compose settings, run outside containers: six real service processes, their health probe,
their Prometheus metrics against the Grafana dashboard, and `driftloop status --json`.

docker-compose.yml's environment is used as written, with only the container host names mapped
to this machine (kafka -> the test broker, s3 -> moto's S3 server, services -> 127.0.0.1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra_support import (
    COMPOSE,
    PROMETHEUS_SYNTHETIC,
    dashboard_exprs,
    load_dashboard,
    load_yaml,
    promql_metric_names,
    sample_names,
)
from prometheus_client.parser import text_string_to_metric_families
from support import start_process, stop_process, wait_until

from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.settings import SERVICES, Ports

pytestmark = pytest.mark.integration


def compose_env(broker: str, s3: str, ports: Ports) -> dict[str, str]:
    """docker-compose.yml's service environment with container hosts mapped to loopback."""
    raw = load_yaml(COMPOSE)["x-driftloop-env"]
    env = {}
    for key, value in raw.items():
        text = str(value)
        if text.startswith("${") and ":-" in text:
            text = text.split(":-", 1)[1].rstrip("}")
        env[key] = text
    assert env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    env["DRIFTLOOP_KAFKA_BOOTSTRAP"] = broker
    assert env["DRIFTLOOP_S3__ENDPOINT"] == "s3:8333"
    env["DRIFTLOOP_S3__ENDPOINT"] = s3
    addresses = json.loads(env["DRIFTLOOP_ADDRESSES"])
    env["DRIFTLOOP_ADDRESSES"] = json.dumps(
        {name: f"127.0.0.1:{ports.grpc(name)}" for name in addresses}
    )
    env["DRIFTLOOP_BIND_HOST"] = "127.0.0.1"  # containers bind 0.0.0.0; here loopback only
    for name, port in ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(port)
    return env


@pytest.fixture(scope="module")
def stack(
    broker: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Ports]]:
    ports = Ports(**{name: free_port() for name in Ports.model_fields})
    env = compose_env(broker, s3_endpoint, ports)
    root = tmp_path_factory.mktemp("stack")
    procs = []
    try:
        for name in SERVICES:
            own = {**env, "DRIFTLOOP_DATA_DIR": str(root / name)}  # one volume per service
            argv = [sys.executable, "-m", f"driftloop.services.{name}"]
            procs.append(start_process(argv, env=own, log_path=str(root / f"{name}.log")))
        for name in SERVICES:
            try:
                wait_until(lambda n=name: probe(n, env).returncode == 0, 120, f"{name} up")
            except AssertionError as exc:
                tail = (root / f"{name}.log").read_text(errors="replace").splitlines()[-40:]
                raise AssertionError(f"{exc}\n{name}.log ends:\n" + "\n".join(tail)) from None
        yield env, ports
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def probe(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The compose healthcheck command of `service`, run with the service's environment."""
    test = load_yaml(COMPOSE)["services"][service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    return subprocess.run(
        [sys.executable, *test[2:]], env=env, capture_output=True, text=True, timeout=30
    )


def scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return sample_names(text_string_to_metric_families(reply.read().decode()))


def test_health_probe_reports_a_service_that_is_not_there(tmp_path: Path) -> None:
    env = {"DRIFTLOOP_PORTS__REGISTRY": str(free_port()), "DRIFTLOOP_DATA_DIR": str(tmp_path)}
    result = probe("registry", env)
    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout


def test_services_become_healthy_and_export_every_dashboard_metric(
    stack: tuple[dict[str, str], Ports],
) -> None:
    env, ports = stack
    exported: set[str] = set()
    for name in SERVICES:
        exported |= scrape(ports.metrics(name))
    queried = set().union(*(promql_metric_names(e) for e in dashboard_exprs(load_dashboard())))
    missing = queried - exported - PROMETHEUS_SYNTHETIC
    assert not missing, f"dashboard queries metrics no running service exports: {missing}"


def test_status_from_the_host_sees_the_same_stack(stack: tuple[dict[str, str], Ports]) -> None:
    env, _ = stack
    client_env = {
        k: v
        for k, v in env.items()
        if k in ("DRIFTLOOP_ADDRESSES", "DRIFTLOOP_KAFKA_BOOTSTRAP") or k.startswith("DRIFTLOOP_P")
    }
    result = subprocess.run(
        [sys.executable, "-m", "driftloop.shared.cli", "status", "--json"],
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **client_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert all(s["healthy"] for s in report["services"].values())
    assert report["broker"]["reachable"]
    assert set(report["lag"]) >= {"validation", "monitoring"}
