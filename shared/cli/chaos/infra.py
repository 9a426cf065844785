"""Chaos infrastructure: start a stack to break (on the embedded broker or an external Kafka),
find its processes' pids, cut the object store off with a TCP proxy, and read a process's
resident memory.

The S3 outage is a real network outage: the stack talks to moto's S3 server through a proxy
this process owns; `cut()` closes the listener and every open connection (clients get
"connection refused"), `restore()` listens again. moto keeps its objects in this process, so
nothing stored is lost by the outage itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from driftloop.shared.cli.children import die_with_parent
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.settings import CommonSettings, Ports, S3Settings


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target` (host, port) until cut; threads, no asyncio."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        self.cuts += 1
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            _close(listener)
        for conn in conns:
            _close(conn)

    def restore(self) -> None:
        if self._listener is None:
            self.start()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._conns.discard(s)
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


class MotoS3:
    """moto's S3 server in this process, reached by the stack through a cuttable proxy."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.proxy = TcpProxy(("127.0.0.1", self.port)).start()

    def settings(self, *, direct: bool) -> S3Settings:
        """S3 settings for the stack (through the proxy) or for this observer (direct)."""
        port = self.port if direct else self.proxy.port
        return S3Settings(
            endpoint=f"127.0.0.1:{port}",
            bucket="driftloop-chaos",
            access_key=SecretStr("chaos"),
            secret_key=SecretStr("chaos-secret"),
        )

    def stop(self) -> None:
        self.proxy.stop()
        self._server.stop()


def stack_env(common: CommonSettings) -> dict[str, str]:
    env = {"DRIFTLOOP_DATA_DIR": str(common.data_dir), "DRIFTLOOP_LOG_JSON": "true"}
    env.update(
        {f"DRIFTLOOP_PORTS__{k.upper()}": str(v) for k, v in common.ports.model_dump().items()}
    )
    if common.object_store == "s3":
        env["DRIFTLOOP_OBJECT_STORE"] = "s3"
        env["DRIFTLOOP_S3__ENDPOINT"] = common.s3.endpoint
        env["DRIFTLOOP_S3__BUCKET"] = common.s3.bucket
        env["DRIFTLOOP_S3__ACCESS_KEY"] = common.s3.access_key.get_secret_value()
        env["DRIFTLOOP_S3__SECRET_KEY"] = common.s3.secret_key.get_secret_value()
    return env


def start_stack(
    data_dir: Path, s3: S3Settings | None = None, *, kafka: str = ""
) -> tuple[CommonSettings, Any]:
    """`driftloop up` (`up --kafka KAFKA` when `kafka` names a broker) as a child process group
    on free ports; returns once every service is healthy. The caller stops it with stop_stack.

    `up` gets SIGTERM should this process die without stopping it (SIGKILL, the OOM killer),
    and stops its services as on `driftloop down`."""
    ports = Ports(**{k: free_port() for k in Ports.model_fields})
    common = CommonSettings(data_dir=data_dir, ports=ports, kafka_bootstrap=kafka)
    if s3 is not None:
        common = common.model_copy(update={"object_store": "s3", "s3": s3})
    log_path = data_dir / "logs" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftloop.shared.cli",
                "up",
                *(["--kafka", kafka] if kafka else []),
            ],
            env={**os.environ, **stack_env(common)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    try:
        deadline = time.monotonic() + 120
        while (stack.read_endpoints(common) or {}).get("pid") != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start; see {data_dir / 'logs'}")
            time.sleep(0.2)  # poll: waiting for endpoints.json
        stack.wait_healthy(common, timeout=120, alive=lambda: proc.poll() is None)
    except BaseException:
        stop_stack(proc)
        raise
    return common, proc


def stop_stack(proc: Any, grace: float = 60) -> int | None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return int(proc.returncode) if proc.returncode is not None else None


def pid_of(common: CommonSettings, name: str) -> int | None:
    """The live pid of a service ("broker" for the embedded broker), from endpoints.json."""
    found = stack.read_endpoints(common)
    if not found:
        return None
    pid = found.get("broker_pid") if name == "broker" else found["services"][name].get("pid")
    return int(pid) if pid and stack.pid_alive(int(pid)) else None


def wait_new_pid(common: CommonSettings, name: str, old: int, timeout: float) -> int:
    """Wait until the supervisor restarted `name` (a different live pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pid_of(common, name)
        if pid is not None and pid != old:
            return pid
        time.sleep(0.1)  # poll: the supervisor restarts with a backoff
    raise TimeoutError(f"{name} was not restarted within {timeout:.0f}s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
