"""Client side of every driftloop gRPC call: channels (TLS when configured, the bearer token as
metadata) and the one reverse error map, from a status back to a driftloop error class."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from driftloop.shared import errors
from driftloop.shared.auth import Role
from driftloop.shared.settings import CommonSettings

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _credentials(common: CommonSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials when this process has a certificate or a CA to trust: verify servers
    with tls_ca_file (system roots when unset) and present our own certificate, if we have one,
    so that servers requiring mutual TLS accept us."""
    if not common.tls_enabled() and common.tls_ca_file is None:
        return None
    ca = common.tls_ca_file.read_bytes() if common.tls_ca_file else None
    if not common.tls_enabled():
        return grpc.ssl_channel_credentials(root_certificates=ca)
    assert common.tls_cert_file is not None and common.tls_key_file is not None
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=common.tls_key_file.read_bytes(),
        certificate_chain=common.tls_cert_file.read_bytes(),
    )


def aio_channel(common: CommonSettings, service: str) -> grpc.aio.Channel:
    address = common.address(service)
    creds = _credentials(common)
    if creds is None:
        return grpc.aio.insecure_channel(address, options=_OPTIONS)
    return grpc.aio.secure_channel(address, creds, options=_OPTIONS)


def sync_channel(common: CommonSettings, service: str) -> grpc.Channel:
    address = common.address(service)
    creds = _credentials(common)
    if creds is None:
        return grpc.insecure_channel(address, options=_OPTIONS)
    return grpc.secure_channel(address, creds, options=_OPTIONS)


def auth_metadata(common: CommonSettings, role: Role | None = None) -> tuple[tuple[str, str], ...]:
    """The bearer token for an RPC of `role` (its role token, else the all-roles token)."""
    token = common.credentials().token_for(role)
    return (("authorization", f"Bearer {token}"),) if token else ()


ERROR_FOR_STATUS: dict[grpc.StatusCode, type[errors.DriftloopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.TooLarge,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
}
"""The inverse of shared/grpc/server.py's GRPC_STATUS. Only UNAVAILABLE and DEADLINE_EXCEEDED
become Unavailable, the one error callers retry; any status not listed (INTERNAL, UNKNOWN,
UNIMPLEMENTED, CANCELLED...) becomes RemoteFailure, which nobody retries."""


def error_for(exc: grpc.RpcError, call: str, address: str = "") -> errors.DriftloopError:
    """The driftloop error for a failed call; `call` names it ("registry GetVersion")."""
    code = _code(exc)
    details = _details(exc)
    kind = ERROR_FOR_STATUS.get(code, errors.RemoteFailure)
    message = f"{call} failed with {code.name}: {details}"
    if kind is errors.Unavailable and address:
        message += f" (is it running at {address}?)"
    elif issubclass(kind, errors.PermissionDenied):
        # why: the usual cause is a token that differs between this process and the server
        message += (
            "; give this process the server's bearer token (DRIFTLOOP_AUTH_TOKEN or "
            "DRIFTLOOP_AUTH_TOKEN_FILE)"
        )
    return kind(message)


@contextmanager
def rpc_errors(call: str, address: str = "") -> Iterator[None]:
    """Raise the mapped driftloop error (`from` the gRPC one) when a call in the block fails;
    wraps sync and `await`ed aio calls alike."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_for(exc, call, address) from exc


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    # why: grpc.RpcError itself has no code(); the errors the stubs raise (sync and aio) do
    code = getattr(exc, "code", None)
    found = code() if callable(code) else None
    return found if isinstance(found, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    return str((details() if callable(details) else None) or exc)
