"""The one place Kafka clients are made: every producer, consumer and admin client of driftloop
(services, CLI, benches) takes its address, TLS, SASL and idempotence from a KafkaConnection.

A client that cannot connect fails with an error that names the broker and what went wrong
(authentication with which mechanism, the TLS handshake, or no answer), within a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from driftloop.shared.errors import DriftloopError, InvalidInput, Unauthenticated, Unavailable
from driftloop.shared.settings import KafkaConnection

log = structlog.get_logger(__name__)

KafkaTarget: TypeAlias = KafkaConnection | str
"""A KafkaConnection (from CommonSettings.kafka_connection()), or a bare bootstrap address:
plaintext, no SASL, idempotence asked of the broker (tests and tools)."""
START_TIMEOUT_S = 60.0
"""How long a client may take to connect (and a producer to get its producer id)."""
REQUEST_TIMEOUT_MS = 30_000


class _Startable(Protocol):
    async def start(self) -> None: ...


def resolve(target: KafkaTarget) -> KafkaConnection:
    return target if isinstance(target, KafkaConnection) else KafkaConnection(bootstrap=target)


def client_options(target: KafkaTarget) -> dict[str, Any]:
    """The keyword arguments every aiokafka client takes: address, TLS and SASL."""
    kafka = resolve(target)
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
    }
    if kafka.tls:
        options["ssl_context"] = ssl_context(kafka)
    if kafka.sasl:
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    return options


def ssl_context(kafka: KafkaConnection) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name against ca_file (the system's roots when
    unset); presents cert_file/key_file when set."""
    try:
        context = ssl.create_default_context(
            cafile=str(kafka.ca_file) if kafka.ca_file is not None else None
        )
        if kafka.cert_file is not None:
            context.load_cert_chain(
                kafka.cert_file, kafka.key_file if kafka.key_file is not None else None
            )
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(str(p) for p in (kafka.ca_file, kafka.cert_file, kafka.key_file) if p)
        raise InvalidInput(
            f"cannot load the Kafka TLS files ({files}; DRIFTLOOP_KAFKA__CA_FILE, "
            f"__CERT_FILE, __KEY_FILE): {exc}"
        ) from exc
    return context


def consumer(target: KafkaTarget, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer (not started: use `start`)."""
    return AIOKafkaConsumer(*topics, **client_options(target), **options)


def admin(target: KafkaTarget, **options: Any) -> AIOKafkaAdminClient:
    """An aiokafka admin client (not started: use `start`)."""
    return AIOKafkaAdminClient(**{**client_options(target), **options})


async def start_producer(target: KafkaTarget, **options: Any) -> AIOKafkaProducer:
    """A started producer, idempotent unless the connection says not to (or, when it leaves it
    unset, the broker refuses: then a plain one, with a warning)."""
    kafka = resolve(target)
    if kafka.idempotent is False:
        return await _started(AIOKafkaProducer(**client_options(kafka), **options), kafka)
    producer = AIOKafkaProducer(**client_options(kafka), enable_idempotence=True, **options)
    try:
        return await _started(producer, kafka, idempotent=True)
    except _ProducerIdRefused as exc:
        if kafka.idempotent:
            raise Unavailable(
                f"Kafka broker {kafka.describe()} refused an idempotent producer ({exc}); "
                "set DRIFTLOOP_KAFKA__IDEMPOTENT=false to produce without idempotence"
            ) from exc
        # why not the other way round (off unless asked): on a broker that allows it, a
        # retried send must not write the message twice; only a broker that refuses it (the
        # embedded one) gets plain producers, and the log says so
        log.warning("idempotent_producer_refused", broker=kafka.bootstrap, error=str(exc))
    return await _started(AIOKafkaProducer(**client_options(kafka), **options), kafka)


def is_idempotent(producer: AIOKafkaProducer) -> bool:
    """Whether the broker gave this started producer a producer id (idempotent sends)."""
    manager = producer._txn_manager  # aiokafka keeps the producer id nowhere public
    return manager is not None and manager.has_pid()


async def start(client: _Startable, target: KafkaTarget) -> None:
    """`client.start()` within START_TIMEOUT_S; a failure to connect raises an error that names
    the broker and says why: Unauthenticated for refused SASL credentials or an untrusted broker
    certificate, Unavailable otherwise."""
    await _started(client, resolve(target))


class _ProducerIdRefused(Exception):
    """The broker answered InitProducerId with an error that retrying will not change (a slow
    or busy broker is Unavailable instead: no fallback to plain producers for that)."""


async def _started(client: Any, kafka: KafkaConnection, *, idempotent: bool = False) -> Any:
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await client.start()
    except TimeoutError as exc:
        await _close(client)
        raise Unavailable(
            f"Kafka broker {kafka.describe()} did not answer within {START_TIMEOUT_S:.0f}s"
        ) from exc
    except KafkaConnectionError as exc:
        await _close(client)
        raise await explain(kafka, exc) from exc
    except KafkaError as exc:
        await _close(client)
        if idempotent and not (exc.retriable or isinstance(exc, KafkaTimeoutError)):
            raise _ProducerIdRefused(f"InitProducerId: {type(exc).__name__}") from exc
        raise Unavailable(f"Kafka broker {kafka.describe()}: {exc}") from exc
    return client


async def _close(client: Any) -> None:
    try:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except Exception as exc:  # noqa: BLE001 - closing what failed to start; the cause is raised
        log.debug("kafka_client_close_failed", error=str(exc))


async def explain(kafka: KafkaConnection, cause: BaseException) -> DriftloopError:
    """Why the broker could not be reached, found by connecting once more to the first
    bootstrap host alone (aiokafka logs the reason of a failed bootstrap but raises only
    "Unable to bootstrap")."""
    host, port, _ = collect_hosts(kafka.bootstrap, randomize=False)[0]
    options = client_options(kafka)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_MS / 1000):
            conn = await create_conn(
                host,
                port,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                ssl_context=options.get("ssl_context"),
                security_protocol=kafka.security_protocol,
                sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        conn.close()
    except (SaslAuthenticationFailed, UnsupportedSaslMechanismError) as exc:
        return Unauthenticated(
            f"Kafka broker {kafka.describe()} refused the {kafka.sasl_mechanism} "
            f"authentication: {exc}; check DRIFTLOOP_KAFKA__SASL_USERNAME and "
            "__SASL_PASSWORD (or __SASL_PASSWORD_FILE)"
        )
    except ssl.SSLCertVerificationError as exc:
        return Unauthenticated(
            f"TLS with Kafka broker {kafka.describe()} failed: the broker's certificate is not "
            f"trusted ({exc.verify_message}); check DRIFTLOOP_KAFKA__CA_FILE (the CA that "
            "signed it) and that the certificate names the host in the bootstrap address"
        )
    except (OSError, KafkaError, TimeoutError, EOFError) as exc:
        return Unavailable(f"Kafka broker {kafka.describe()} unreachable: {_reason(exc)}")
    return Unavailable(f"Kafka broker {kafka.describe()} unreachable: {_reason(cause)}")


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc) if str(exc).startswith(name) else f"{name}: {exc}".rstrip(": ")
    if isinstance(exc, TimeoutError | ConnectionRefusedError):
        return text
    # why: a listener of another protocol (TLS or not), or one that requires a client
    # certificate, just drops the connection; the client sees no reason
    return (
        f"{text} (the broker closed the connection: check that DRIFTLOOP_KAFKA__SECURITY_PROTOCOL "
        "is the listener's, and DRIFTLOOP_KAFKA__CERT_FILE where it requires client certificates)"
    )
