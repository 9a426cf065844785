"""The one reverse error map (shared/grpc/client.py): every gRPC status comes back as its driftloop
error, the inverse of the server's table; only UNAVAILABLE and DEADLINE_EXCEEDED mean "retry",
and a wrong or missing token is a permission error, never Unavailable."""

from __future__ import annotations

import grpc
import pytest

from driftloop.shared import errors
from driftloop.shared.grpc.client import ERROR_FOR_STATUS, error_for, rpc_errors
from driftloop.shared.grpc.server import GRPC_STATUS, status_for

pytestmark = pytest.mark.unit
S = grpc.StatusCode

EXPECTED: dict[grpc.StatusCode, type[errors.DriftloopError]] = {
    S.OK: errors.RemoteFailure,  # never raised as an error; if it were, it is nothing we know
    S.CANCELLED: errors.RemoteFailure,
    S.UNKNOWN: errors.RemoteFailure,
    S.INVALID_ARGUMENT: errors.InvalidInput,
    S.DEADLINE_EXCEEDED: errors.Unavailable,
    S.NOT_FOUND: errors.NotFound,
    S.ALREADY_EXISTS: errors.AlreadyExists,
    S.PERMISSION_DENIED: errors.PermissionDenied,
    S.RESOURCE_EXHAUSTED: errors.TooLarge,
    S.FAILED_PRECONDITION: errors.Conflict,
    S.ABORTED: errors.RemoteFailure,
    S.OUT_OF_RANGE: errors.RemoteFailure,
    S.UNIMPLEMENTED: errors.RemoteFailure,
    S.INTERNAL: errors.RemoteFailure,
    S.UNAVAILABLE: errors.Unavailable,
    S.DATA_LOSS: errors.RemoteFailure,
    S.UNAUTHENTICATED: errors.Unauthenticated,
}


def rpc_error(code: grpc.StatusCode, details: str = "details") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_every_status_code_is_covered() -> None:
    assert set(EXPECTED) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_each_status_maps_to_its_error_class(code: grpc.StatusCode) -> None:
    error = error_for(rpc_error(code, "what went wrong"), "registry GetModel")
    assert type(error) is EXPECTED[code]
    assert "registry GetModel" in str(error) and code.name in str(error)
    assert "what went wrong" in str(error)


def test_only_unavailable_and_deadline_exceeded_mean_retry() -> None:
    retried = {
        c for c in grpc.StatusCode if isinstance(error_for(rpc_error(c), "x"), errors.Unavailable)
    }
    assert retried == {S.UNAVAILABLE, S.DEADLINE_EXCEEDED}


@pytest.mark.parametrize("code", [S.UNAUTHENTICATED, S.PERMISSION_DENIED], ids=lambda c: c.name)
def test_a_refused_token_is_a_permission_error_never_unavailable(code: grpc.StatusCode) -> None:
    error = error_for(rpc_error(code, "needs a bearer token"), "registry RegisterVersion")
    assert isinstance(error, errors.PermissionDenied)
    assert not isinstance(error, errors.Unavailable)
    assert "DRIFTLOOP_AUTH_TOKEN" in str(error), "the message says what to fix"


def test_the_map_inverts_the_server_table() -> None:
    """A driftloop error sent by a server comes back as a class the server sends the same way."""
    for cls, code in GRPC_STATUS.items():
        back = ERROR_FOR_STATUS.get(code, errors.RemoteFailure)
        assert status_for(back("x")) == code, f"{cls.__name__} -> {code.name} -> {back.__name__}"
    assert status_for(errors.RemoteFailure("x")) == S.INTERNAL


def test_unavailable_names_the_address() -> None:
    error = error_for(rpc_error(S.UNAVAILABLE), "registry ListModels", "127.0.0.1:50054")
    assert "127.0.0.1:50054" in str(error)


async def test_rpc_errors_raises_the_mapped_error_from_the_grpc_one() -> None:
    async def call() -> None:
        raise rpc_error(S.NOT_FOUND, "model 'm' does not exist")

    with pytest.raises(errors.NotFound) as caught:
        with rpc_errors("registry GetModel"):
            await call()
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


def test_an_rpc_error_without_a_status_is_a_remote_failure() -> None:
    with pytest.raises(errors.RemoteFailure, match="UNKNOWN"):
        with rpc_errors("registry GetModel"):
            raise grpc.RpcError("no status at all")
