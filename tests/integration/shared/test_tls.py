"""TLS and mutual TLS on the shared gRPC server and client, with throwaway certificates."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftloop.shared.cli.stack.broker import free_port
from driftloop.shared.grpc.client import aio_channel
from driftloop.shared.grpc.server import build_server, set_serving
from driftloop.shared.settings import CommonSettings, Ports

pytestmark = pytest.mark.integration


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_pair(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_pair(directory / name, cert, key)
    return cert, key


def make_leaf(
    directory: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca[1], hashes.SHA256())
    )
    _write_pair(directory / name, cert, key)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca = make_ca(tmp_path, "ca")
    make_ca(tmp_path, "other-ca")
    make_leaf(tmp_path, "server", ca)
    make_leaf(tmp_path, "client", ca)
    return tmp_path


async def _serve(common: CommonSettings) -> AsyncIterator[None]:
    server, health, _ = build_server(common, common.ports.registry, [])
    await server.start()
    await set_serving(health, [])
    try:
        yield
    finally:
        await server.stop(grace=None)


async def _check(client: CommonSettings) -> str:
    async with aio_channel(client, "registry") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _settings(pki: Path, port: int, **tls: str) -> CommonSettings:
    return CommonSettings(
        data_dir=pki,
        ports=Ports(registry=port),
        **{k: pki / v for k, v in tls.items()},  # type: ignore[arg-type]
    )


async def test_tls_server_is_reachable_only_over_tls_with_the_right_ca(pki: Path) -> None:
    port = free_port()
    server = _settings(pki, port, tls_cert_file="server.crt", tls_key_file="server.key")
    async for _ in _serve(server):
        assert await _check(_settings(pki, port, tls_ca_file="ca.crt")) == "SERVING"
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await _check(_settings(pki, port))
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as wrong_ca:
            await _check(_settings(pki, port, tls_ca_file="other-ca.crt"))
        assert wrong_ca.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki: Path) -> None:
    port = free_port()
    server = _settings(
        pki,
        port,
        tls_cert_file="server.crt",
        tls_key_file="server.key",
        tls_client_ca_file="ca.crt",
    )
    async for _ in _serve(server):
        with_cert = _settings(
            pki, port, tls_ca_file="ca.crt", tls_cert_file="client.crt", tls_key_file="client.key"
        )
        assert await _check(with_cert) == "SERVING"
        with pytest.raises(grpc.aio.AioRpcError) as no_cert:
            await _check(_settings(pki, port, tls_ca_file="ca.crt"))
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
