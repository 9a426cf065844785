"""Client channels to driftloop services: TLS when configured, the bearer token as metadata."""

from __future__ import annotations

import grpc

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


def auth_metadata(common: CommonSettings) -> tuple[tuple[str, str], ...]:
    token = common.token()
    return (("authorization", f"Bearer {token}"),) if token else ()
