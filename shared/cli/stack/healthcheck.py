"""Container health probe: ask a local driftloop service's gRPC health service, exit 0 if SERVING.

`python -m driftloop.shared.cli.stack.healthcheck [SERVICE]`: without SERVICE the service is
read from PID 1's command line (`python -m driftloop.services.<name>`), so one image
HEALTHCHECK fits all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from driftloop.shared.cli.stack.embedded import health_of
from driftloop.shared.settings import SERVICES, CommonSettings

MODULE_PREFIX = "driftloop.services."


def service_from_cmdline(argv: list[str]) -> str | None:
    """The service a `python -m driftloop.services.<name>` command line runs, if any."""
    for arg in argv:
        if arg.startswith(MODULE_PREFIX):
            name = arg.removeprefix(MODULE_PREFIX).split(".")[0]
            if name in SERVICES:
                return name
    return None


def pid1_argv(proc: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        return [a for a in proc.read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def probe(service: str, common: CommonSettings, timeout: float = 2.0) -> str:
    """The service's health status on this host, whatever addresses clients are configured with."""
    local = common.model_copy(update={"addresses": {}, "connect_host": "127.0.0.1"})
    return health_of(local, service, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else service_from_cmdline(pid1_argv())
    if service is None or service not in SERVICES:
        sys.stderr.write(f"unknown service {service!r}; give one of {', '.join(SERVICES)}\n")
        return 2
    status = probe(service, CommonSettings())
    sys.stdout.write(f"{service} {status}\n")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
