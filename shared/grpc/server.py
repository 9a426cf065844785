"""One way to build every service's gRPC server: health, reflection, auth, errors, TLS.

Servicers contain no try/except: the interceptor maps DriftloopError subclasses to status codes
through one table, and anything unexpected to INTERNAL (logged with its traceback).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from driftloop.shared import errors
from driftloop.shared.allocator import give_back_freed_memory
from driftloop.shared.auth import Credentials, Role, Verdict
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)

GRPC_STATUS: dict[type[errors.DriftloopError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ArtifactRejected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RemoteFailure: grpc.StatusCode.INTERNAL,
}
"""Error class -> status. Its inverse, client side, is shared/grpc/client.py's ERROR_FOR_STATUS
(a test checks that every status here comes back as a class that maps to it again)."""

RPC_TOTAL = Counter("driftloop_grpc_requests_total", "gRPC requests", ["method", "code"])
RPC_SECONDS = Histogram("driftloop_grpc_request_seconds", "gRPC request latency", ["method"])
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The default largest request a server receives (gRPC refuses a larger one before Python sees
it); a service whose requests are smaller sets its own (DRIFTLOOP_SERVING_MAX_REQUEST_BYTES)."""
OFF_LOOP_DECODE_BYTES = 256 * 1024
"""Requests larger than this are decoded in a worker thread, so the event loop keeps answering
small requests meanwhile."""
DECODING_BUDGET_BYTES = 128 * 1024 * 1024
"""At most this many bytes of large requests are decoded (and held, until answered) at once; the
rest wait their turn, so concurrent large requests cannot grow a service's memory without bound."""

REFUSAL_DELAY_S_PER_MIB = 0.05
"""How long the answer to a refused large request is held back, per MiB it carried (at most
MAX_REFUSAL_DELAY_S): a caller sending refused 15 MiB requests back to back on one stream made
the service receive 200 MB/s and tripled every other caller's p99; held back 0.75 s each, it
sends 20 MB/s. Nothing of the request is kept meanwhile."""
MAX_REFUSAL_DELAY_S = 5.0


def refusal_delay(size: int) -> float:
    """Seconds the refusal of a large request (`size` bytes, over OFF_LOOP_DECODE_BYTES) is held
    back; see REFUSAL_DELAY_S_PER_MIB."""
    return min(MAX_REFUSAL_DELAY_S, REFUSAL_DELAY_S_PER_MIB * size / (1024 * 1024))


Guard = Callable[[bytes], None]
"""Looks at a large request's bytes before they are parsed; raises a DriftloopError to refuse."""


@dataclass(frozen=True)
class _Unread:
    """What an unauthenticated request is decoded into: its size (its bytes are never parsed)."""

    size: int


@dataclass
class _Deferred:
    """A large request's bytes, decoded off the event loop by the wrapped handler (after its
    guard, if the method has one, looked at the bytes)."""

    data: bytes
    decode: Callable[[bytes], Any]
    guard: Callable[[bytes], None] | None = None

    def forget(self) -> None:
        """Drop the bytes (a refused request's answer may be held back a while)."""
        self.data = b""

    def decoded(self) -> Any:
        if self.guard is not None:
            self.guard(self.data)
        return self.decode(self.data)


class _ByteBudget:
    """Bytes of large requests in flight; `take(n)` waits until `n` more fit (an over-budget
    request alone is let through rather than waiting forever)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._freed = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self._freed:
            await self._freed.wait_for(lambda: self._used == 0 or self._used + n <= self._limit)
            self._used += n

    async def give(self, n: int) -> None:
        async with self._freed:
            self._used -= n
            self._freed.notify_all()


def _deserializer(decode: Any, authorized: bool, guard: Guard | None) -> Any:
    """Decode small requests inline, defer large ones, never parse an unauthenticated one."""
    if decode is None:
        return None

    def deserialize(data: bytes) -> Any:
        if not authorized:
            return _Unread(len(data))
        if len(data) > OFF_LOOP_DECODE_BYTES:
            return _Deferred(data, decode, guard)
        return decode(data)

    return deserialize


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it: `add(servicer, server)` from the generated _pb2_grpc."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str
    guards: Mapping[str, Guard] = field(default_factory=dict)
    """Method name -> a check of a large request's raw bytes before they are parsed (raises a
    DriftloopError to refuse it), for requests whose full parse alone would be costly."""
    roles: Mapping[str, Role] = field(default_factory=dict)
    """Method name (e.g. "Promote") -> the role whose token it needs when tokens are configured
    (shared/auth.py); methods not named here are open (reads)."""


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, credentials: Credentials, roles: dict[str, Role], guards: dict[str, Guard]
    ) -> None:
        self._credentials = credentials
        self._roles = roles
        self._guards = guards
        self._budget: _ByteBudget | None = None  # made on first use, inside the server's loop
        self._built: dict[tuple[str, Verdict], tuple[Any, Any]] = {}
        """(method, verdict) -> (the servicer's handler, the wrapped one built for it)."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        needs = self._roles.get(method) if self._credentials.configured else None
        verdict = Verdict.ALLOWED
        if needs is not None:
            metadata = dict(details.invocation_metadata or ())
            verdict = self._credentials.verdict(needs, str(metadata.get("authorization", "")))
        # why a cache: this runs for every call, and building the wrapped handler (closures,
        # metric children) cost as much as a small ModelInfer's own work
        built = self._built.get((method, verdict))
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self._build(handler, method, verdict, needs)
        self._built[(method, verdict)] = (handler, wrapped)
        return wrapped

    def _build(self, handler: Any, method: str, verdict: Verdict, needs: Role | None) -> Any:
        authorized = verdict is Verdict.ALLOWED
        # why: the token is checked from the metadata before any request byte is parsed, and a
        # large request is parsed off the event loop (an unauthenticated 60 MB Ingest once cost
        # 1 GB and stalled every other call while it was decoded)
        decode = _deserializer(handler.request_deserializer, authorized, self._guards.get(method))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method, (verdict, needs), self._decoded),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(handler.stream_unary, method, (verdict, needs), self._decoded_stream),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming responses (health Watch, reflection) pass through

    def _budget_now(self) -> _ByteBudget:
        if self._budget is None:
            self._budget = _ByteBudget(DECODING_BUDGET_BYTES)
        return self._budget

    async def _decoded(self, request: Any, held: list[int]) -> Any:
        """The request, decoded in a thread when it was deferred; its bytes are counted in the
        budget (appended to `held`) until the call ends."""
        if not isinstance(request, _Deferred):
            return request
        size = len(request.data)
        await self._budget_now().take(size)
        held.append(size)
        return await asyncio.to_thread(request.decoded)

    async def _decoded_stream(self, requests: Any, held: list[int]) -> Any:
        """The stream's messages, each large one decoded in a thread; its bytes are counted in
        the budget until the servicer asks for the next message (or the call ends)."""

        async def decoded() -> Any:
            async for request in requests:
                while held:
                    await self._budget_now().give(held.pop())
                yield await self._decoded(request, held)

        return decoded()

    async def _held_back(self, request: Any, held: list[int]) -> None:
        """Before a large request is refused: give its bytes and budget back, then wait
        `refusal_delay`. A small request is refused at once."""
        size = request.size if isinstance(request, _Unread) else sum(held)
        if size <= OFF_LOOP_DECODE_BYTES:
            return
        if isinstance(request, _Deferred):
            request.forget()
        while held:
            await self._budget_now().give(held.pop())
        # a refused large request's parse can leave ~10x its size in freed heap
        await asyncio.to_thread(give_back_freed_memory)
        await asyncio.sleep(refusal_delay(size))

    def _wrap(
        self, behavior: Any, method: str, access: tuple[Verdict, Role | None], decoded: Any
    ) -> Any:
        verdict, needs = access
        seconds = RPC_SECONDS.labels(method)
        totals: dict[str, Any] = {}

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            held: list[int] = []
            try:
                if verdict is Verdict.UNAUTHENTICATED:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await self._held_back(request, held)
                    await context.abort(
                        code,
                        f"{method} needs 'authorization: Bearer <token>' metadata with a "
                        f"token of the {needs!r} role (or the all-roles token)",
                    )
                if verdict is Verdict.FORBIDDEN:
                    code = grpc.StatusCode.PERMISSION_DENIED
                    await context.abort(
                        code, f"{method} needs the {needs!r} role; this token does not grant it"
                    )
                with structlog.contextvars.bound_contextvars(rpc=method):
                    return await behavior(await decoded(request, held), context)
            except errors.DriftloopError as exc:
                code = status_for(exc)
                log.info("rpc_failed", rpc=method, code=code.name, error=str(exc))
                # why: the traceback holds the handler's frame and so the refused request (for a
                # large one, hundreds of MB of parsed tensors) until the call object goes
                exc.__traceback__ = None
                await self._held_back(request, held)
                await context.abort(code, str(exc))
            except (grpc.aio.AbortError, grpc.RpcError):
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[assignment]
                raise
            except NotImplementedError:
                # The generated base servicer raises this for an rpc the service lacks.
                code = grpc.StatusCode.UNIMPLEMENTED
                await context.abort(code, f"{method} is not implemented by this service")
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_crashed", rpc=method)
                await context.abort(code, f"internal error in {method}; see the service log")
            finally:
                while held:
                    await self._budget_now().give(held.pop())
                name = getattr(code, "name", str(code))
                total = totals.get(name)
                if total is None:
                    total = totals[name] = RPC_TOTAL.labels(method, name)
                total.inc()
                seconds.observe(time.perf_counter() - started)

        return wrapped


def build_server(
    common: CommonSettings,
    port: int,
    bindings: Iterable[ServiceBinding],
    *,
    reuse_port: bool = False,
    max_request_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """Build (not start) a gRPC server with health, reflection, auth and error mapping.

    Returns the server, its health servicer (every service starts NOT_SERVING; call
    `set_serving`) and the port actually bound (useful when `port` is 0). `reuse_port` sets
    SO_REUSEPORT so several processes can listen on one port (serving's workers; the kernel
    spreads connections); off, a port already in use fails the bind at once.
    `max_request_bytes`: gRPC refuses a larger request (RESOURCE_EXHAUSTED) before it is read.
    """
    bindings = list(bindings)
    roles = {f"/{b.full_name}/{m}": role for b in bindings for m, role in b.roles.items()}
    guards = {f"/{b.full_name}/{m}": guard for b in bindings for m, guard in b.guards.items()}
    server = grpc.aio.server(
        interceptors=[_Interceptor(common.credentials(), roles, guards)],
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for b in bindings:
        b.add(b.servicer, server)
    names = [b.full_name for b in bindings]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{common.bind_host}:{port}"
    if common.tls_enabled():
        assert common.tls_cert_file is not None and common.tls_key_file is not None
        client_ca = common.tls_client_ca_file.read_bytes() if common.tls_client_ca_file else None
        creds = grpc.ssl_server_credentials(
            [(common.tls_key_file.read_bytes(), common.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise errors.Unavailable(f"cannot bind gRPC port {address}: already in use?")
    return server, health_servicer, bound


async def set_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str]) -> None:
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def set_not_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str]) -> None:
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
