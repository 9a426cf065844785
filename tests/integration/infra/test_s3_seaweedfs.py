"""SeaweedFS, the S3 server docker-compose.yml and the in-cluster overlay run, started as compose
configures it (`weed mini` with compose's flags and keys, on free loopback ports): compose's bucket
step, its keys, and driftloop's object-store contract (the functions of
tests/integration/shared/test_objectstore_contract.py) against it.

`make seaweedfs` builds `weed` from the Go module proxy into .bench/seaweedfs/bin (gitignored;
the revision the Makefile pins, whose flags this file uses); without it these tests skip.
`make test` and CI do not build it (several minutes of build): there the contract runs against
moto's S3 server only.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra_support import COMPOSE, ROOT, load_yaml
from minio import Minio
from minio.error import S3Error
from support import start_process, stop_process, wait_until

from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.errors import Unavailable
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.s3 import S3ObjectStore

pytestmark = pytest.mark.integration

BUILT = ROOT / ".bench" / "seaweedfs" / "bin" / "weed"
CONTRACT = ROOT / "tests" / "integration" / "shared" / "test_objectstore_contract.py"
START_TIMEOUT_S = 90.0


def compose_value(value: Any) -> str:
    """A compose environment value as it runs without a .env: `${VAR:-default}` -> default."""
    text = str(value)
    if text.startswith("${") and ":-" in text:
        text = text.split(":-", 1)[1].rstrip("}")
    return text


def flag(command: list[str], name: str) -> str:
    values = [c.split("=", 1)[1] for c in command if c.startswith(f"-{name}=")]
    assert len(values) == 1, (name, command)
    return values[0]


class Weed:
    """One `weed mini` process as compose's `s3` service runs it, on this machine's loopback."""

    def __init__(self, workdir: Path) -> None:
        service = load_yaml(COMPOSE)["services"]["s3"]
        command: list[str] = list(service["command"])
        self.keys = {k: compose_value(v) for k, v in service["environment"].items()}
        self.port = free_port()
        # compose's flags as written; only the data dir, the bind address and the ports differ
        assert flag(command, "dir") == "/data" and flag(command, "ip") == "127.0.0.1"
        command = [c for c in command if not c.startswith(("-dir=", "-ip.bind=", "-s3.port="))]
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        ports["admin.port.legacy"] = 0  # else a fixed port: two runs at once would collide
        self.argv = [
            str(BUILT),
            *command,
            f"-dir={workdir / 'data'}",
            "-ip.bind=127.0.0.1",  # containers listen on their network; a test on loopback only
            f"-s3.port={self.port}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        (workdir / "data").mkdir(parents=True)
        self.workdir = workdir
        self.log = workdir / "weed.log"
        # the image's entrypoint turns on Go's FIPS 140-3 mode; so does this run
        env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "GODEBUG": "fips140=on"}
        self.proc = start_process(self.argv, env={**env, **self.keys}, log_path=str(self.log))

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """compose's healthcheck: GET /healthz on the S3 port answers 200."""
        assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def client(self, *, secret: str | None = None) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.keys["AWS_ACCESS_KEY_ID"],
            secret_key=secret or self.keys["AWS_SECRET_ACCESS_KEY"],
            secure=False,
        )


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    if not BUILT.is_file():
        pytest.skip(f"SeaweedFS: no `weed` at {BUILT} (run `make seaweedfs`)")
    server = Weed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        wait_until(server.healthy, START_TIMEOUT_S, "SeaweedFS S3 /healthz")
        yield server
    finally:
        stop_process(server.proc)


def compose_init_env(weed: Weed) -> dict[str, str]:
    """compose's environment of `s3-init` (the services'), its S3 host mapped to loopback."""
    compose = load_yaml(COMPOSE)
    raw = compose["services"]["s3-init"]["environment"]
    env = {key: compose_value(value) for key, value in raw.items()}
    host, port = env["DRIFTLOOP_S3__ENDPOINT"].split(":")
    assert host == "s3" and f"-s3.port={port}" in compose["services"]["s3"]["command"]
    env["DRIFTLOOP_S3__ENDPOINT"] = weed.endpoint
    env["DRIFTLOOP_DATA_DIR"] = str(weed.workdir / "init")
    return {**env, "PATH": os.environ["PATH"]}


def run_compose_init(weed: Weed) -> subprocess.CompletedProcess[str]:
    command = load_yaml(COMPOSE)["services"]["s3-init"]["command"]
    assert command[0] == "python"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env=compose_init_env(weed),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_bucket_step_creates_the_bucket_once_healthy(weed: Weed) -> None:
    bucket = compose_init_env(weed)["DRIFTLOOP_S3__BUCKET"]
    client = weed.client()
    assert not client.bucket_exists(bucket)
    first = run_compose_init(weed)
    assert first.returncode == 0, first.stderr[-3000:]
    assert client.bucket_exists(bucket)
    again = run_compose_init(weed)  # `docker compose up` on a stack that ran before
    assert again.returncode == 0, again.stderr[-3000:]


def test_requests_without_compose_keys_are_refused(weed: Weed) -> None:
    with pytest.raises(S3Error) as refused:
        weed.client(secret="not-the-secret").bucket_exists("driftloop")
    assert refused.value.code == "SignatureDoesNotMatch"
    with pytest.raises(Unavailable, match="SignatureDoesNotMatch"):
        S3ObjectStore(weed.client(secret="not-the-secret"), "contract-refused", retry_s=0)
    anonymous = Minio(weed.endpoint, secure=False)
    with pytest.raises(S3Error) as denied:
        anonymous.list_buckets()
    assert denied.value.code == "AccessDenied"


@pytest.fixture
def store(weed: Weed, tmp_path: Path) -> ObjectStore:
    """The contract's `store`, on SeaweedFS: a fresh bucket per test, as the contract's S3 case."""
    return S3ObjectStore(weed.client(), f"contract-{tmp_path.name.lower().replace('_', '-')[:40]}")


def contract_tests() -> dict[str, Any]:
    """The contract module's tests that take a `store`, to run here with this module's `store`."""
    spec = importlib.util.spec_from_file_location("objectstore_contract_on_seaweedfs", CONTRACT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        name: test
        for name, test in vars(module).items()
        if name.startswith("test_") and "store" in inspect.signature(test).parameters
    }


CONTRACT_TESTS = contract_tests()
assert len(CONTRACT_TESTS) >= 5, f"found only {sorted(CONTRACT_TESTS)} in {CONTRACT}"
globals().update(CONTRACT_TESTS)
