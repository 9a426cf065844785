"""driftloop's transport-neutral error hierarchy.

Cores raise these; each adapter maps them once (gRPC: shared/grpc/server.py, Kafka: dead letter),
and a gRPC status comes back as one of them through the inverse table (shared/grpc/client.py).

    DriftloopError
    ├── InvalidInput          the caller sent something wrong (bad rows, bad request fields)
    │   └── SchemaViolation   rows that break a dataset's schema
    ├── NotFound              unknown model, version, dataset, run
    ├── AlreadyExists         creating something that exists
    ├── Conflict              the request clashes with current state
    ├── NotReady              the thing exists but cannot answer yet (no production model)
    ├── PermissionDenied      the caller may not do this: fix the credentials, do not retry
    │   └── Unauthenticated   missing or wrong bearer token
    ├── ArtifactRejected      an artifact failed its hash check or is not trusted to load
    ├── TooLarge              a request beyond a configured size limit (rows, bytes)
    ├── RemoteFailure         another service failed in a way no class above names (INTERNAL,
    │                         UNKNOWN, UNIMPLEMENTED... from gRPC): a bug there, not an outage
    └── Unavailable           a dependency (broker, object store, registry) cannot be reached;
                              the only error worth retrying
"""

from __future__ import annotations


class DriftloopError(Exception):
    """Base of every error driftloop raises on purpose. The message tells the caller what to fix."""


class InvalidInput(DriftloopError):
    pass


class SchemaViolation(InvalidInput):
    pass


class NotFound(DriftloopError):
    pass


class AlreadyExists(DriftloopError):
    pass


class Conflict(DriftloopError):
    pass


class NotReady(DriftloopError):
    pass


class PermissionDenied(DriftloopError):
    pass


class Unauthenticated(PermissionDenied):
    pass


class ArtifactRejected(DriftloopError):
    pass


class Unavailable(DriftloopError):
    pass


class TooLarge(DriftloopError):
    pass


class RemoteFailure(DriftloopError):
    pass
