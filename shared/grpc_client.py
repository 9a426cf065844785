"""Client channels to driftloop services: TLS when configured, the bearer token as metadata."""

from __future__ import annotations

import grpc

from driftloop.shared.settings import CommonSettings

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _credentials(common: CommonSettings) -> grpc.ChannelCredentials | None:
    if not common.tls_enabled():
        return None
    ca = common.tls_ca_file.read_bytes() if common.tls_ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca)


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
