"""Fixtures that start real parts: the embedded Kafka-protocol broker, real Apache Kafka and an
S3 HTTP endpoint."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import kafka_broker
import pytest
from support import stack_env, start_process, stop_process, wait_until

from driftloop.shared.cli.stack.broker import broker_argv, free_port, wait_for_port
from driftloop.shared.settings import CommonSettings, Ports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so a stack fixture can tell its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _print_log_tails(request: pytest.FixtureRequest, logs: Path, lines: int = 40) -> None:
    """After a failed test, the end of every service log of its stack (shown by pytest as the
    teardown's captured output): a rare failure in CI is then diagnosable from its report."""
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed or not logs.is_dir():
        return
    for log in sorted(logs.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        sys.stdout.write(f"----- last {len(tail)} lines of {log.name} -----\n")
        sys.stdout.write("\n".join(tail) + "\n")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh Tansu broker process on a free port; yields its bootstrap address."""
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    proc = start_process(broker_argv(port), log_path=str(log))
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def real_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Apache Kafka (KRaft, one node) on free ports, one per session; yields its bootstrap
    address. Skipped with the reason when Java or the fetched jars are missing (failed instead
    when DRIFTLOOP_REQUIRE_KAFKA=1). Its data dir is removed afterwards; its logs stay in the
    session's tmp dir."""
    reason = kafka_broker.missing()
    if reason is not None:
        kafka_broker.skip_or_fail(reason)
    running = kafka_broker.start(tmp_path_factory.mktemp("kafka"))
    try:
        yield running.bootstrap
    finally:
        kafka_broker.stop(running)


@pytest.fixture(params=["embedded", "kafka"])
def any_broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker's bootstrap address; a test using it runs once on the embedded broker (the
    module's `broker`) and once on real Kafka (the session's, its topics deleted after the
    test so that each test starts from none, without paying for a new broker)."""
    if request.param == "embedded":
        yield request.getfixturevalue("broker")
        return
    bootstrap = request.getfixturevalue("real_kafka")
    try:
        yield bootstrap
    finally:
        kafka_broker.delete_topics(bootstrap)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port (a real HTTP endpoint); yields host:port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def free_ports() -> Ports:
    """A Ports set where every port is currently free."""
    names = Ports.model_fields
    return Ports(**{name: free_port() for name in names})


@pytest.fixture
def common(tmp_path: Path, any_broker: str) -> CommonSettings:
    """Settings for one service under test: fresh data dir, the test broker, free ports."""
    return CommonSettings(
        data_dir=tmp_path / "data", kafka_bootstrap=any_broker, ports=free_ports(), log_json=True
    )


@pytest.fixture
def running_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommonSettings]:
    """The whole embedded stack (`driftloop up` as a process on free ports), healthy; always
    stopped afterwards, and it must stop cleanly."""
    yield from _stack(request, tmp_path, "")


@pytest.fixture(params=["embedded", "kafka"])
def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommonSettings]:
    """The whole stack, healthy: a test using it runs once on the embedded broker (`driftloop
    up`) and once on real Kafka (`driftloop up --kafka`, the session's broker, its topics
    deleted after the test)."""
    if request.param == "embedded":
        yield from _stack(request, tmp_path, "")
        return
    bootstrap = request.getfixturevalue("real_kafka")
    try:
        yield from _stack(request, tmp_path, bootstrap)
    finally:
        kafka_broker.delete_topics(bootstrap)


def _stack(request: pytest.FixtureRequest, tmp_path: Path, kafka: str) -> Iterator[CommonSettings]:

    from driftloop.shared.cli.stack import embedded as stack

    common = CommonSettings(data_dir=tmp_path / "data", ports=free_ports(), kafka_bootstrap=kafka)
    proc = start_process(
        [
            sys.executable,
            "-m",
            "driftloop.shared.cli",
            "up",
            *(["--kafka", kafka] if kafka else []),
        ],
        env=stack_env(common),
        log_path=str(tmp_path / "up.log"),
    )
    try:
        wait_until(
            lambda: proc.poll() is None and stack.read_endpoints(common), 60, "endpoints.json"
        )
        stack.wait_healthy(common, timeout=120, alive=lambda: proc.poll() is None)
        yield common
    finally:
        _print_log_tails(request, common.data_dir / "logs")
        stop_process(proc, grace=60)
        assert proc.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
        assert not stack.endpoints_path(common).exists(), "endpoints.json removed on stop"
