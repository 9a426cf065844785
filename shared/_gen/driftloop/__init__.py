"""driftloop: a closed-loop MLOps platform.

Three folders make this one namespace (see pyproject.toml):
- driftloop.protos.<domain>.v1: code generated from protos/ by `make protos` (never edited);
  the proto *packages* stay `driftloop.<domain>.v1` (and `inference` for V2) on the wire.
- driftloop.shared: the library every service imports (shared/).
- driftloop.services.<name>: the six services (services/).
"""

import os as _os

# why: driftloop processes fork only to exec (the supervisor's services, serving's workers, the
# tests' stacks), while gRPC channels are live; gRPC's fork handlers then race its poller thread
# and abort the parent with "epoll_wait error: Bad file descriptor" (grpc/grpc#43055, seen once
# in CI). gRPC documents GRPC_ENABLE_FORK_SUPPORT=false for fork+exec; it must be set before
# grpc is imported, and every driftloop entry point imports this package first.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
