"""Kafka connection settings: read from DRIFTLOOP_KAFKA__*, resolved in one place, turned into
the same TLS and SASL options for every client; the password never shows."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftloop.shared.bus import connection
from driftloop.shared.cli.stack.embedded import build_specs
from driftloop.shared.errors import InvalidInput
from driftloop.shared.settings import CommonSettings, KafkaConnection

pytestmark = pytest.mark.unit


def test_kafka_settings_come_from_the_environment_beside_the_bootstrap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("from-the-file\n")
    monkeypatch.setenv("DRIFTLOOP_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_PASSWORD", "from-the-env")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_PASSWORD_FILE", str(password))
    monkeypatch.setenv("DRIFTLOOP_KAFKA__IDEMPOTENT", "true")
    kafka = CommonSettings().kafka_connection()
    assert kafka.bootstrap == "kafka-1:9093,kafka-2:9093"
    assert kafka.sasl_password == "from-the-file", "the file takes precedence"
    assert kafka.idempotent is True
    assert "from-the" not in repr(kafka) and "from-the" not in kafka.describe()
    assert kafka.describe() == "kafka-1:9093,kafka-2:9093 (SASL_SSL, SCRAM-SHA-512 as svc)"


def test_sasl_without_credentials_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="DRIFTLOOP_KAFKA__SASL_USERNAME"):
        CommonSettings()


def test_a_bare_address_is_plaintext_and_asks_the_broker_for_idempotence() -> None:
    kafka = connection.resolve("127.0.0.1:9092")
    assert kafka == KafkaConnection(bootstrap="127.0.0.1:9092")
    options = connection.client_options(kafka)
    assert options["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in options and "sasl_mechanism" not in options
    assert kafka.idempotent is None


async def test_every_client_gets_the_same_tls_and_sasl_options() -> None:
    kafka = KafkaConnection(
        bootstrap="127.0.0.1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password="secret",
    )
    options = connection.client_options(kafka)
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert options["sasl_mechanism"] == "PLAIN"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "secret")
    consumer = connection.consumer(kafka, "driftloop.drift")
    admin = connection.admin(kafka)
    for client in (consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "PLAIN"
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    await admin.close()
    await consumer.stop()


def test_an_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    kafka = KafkaConnection(
        bootstrap="127.0.0.1:9093", security_protocol="SSL", ca_file=tmp_path / "missing.crt"
    )
    with pytest.raises(InvalidInput, match="DRIFTLOOP_KAFKA__CA_FILE"):
        connection.client_options(kafka)


def test_up_tells_services_of_the_embedded_broker_to_skip_idempotence(tmp_path: Path) -> None:
    embedded = CommonSettings(data_dir=tmp_path)
    specs = {s.name: s for s in build_specs(embedded, None)}
    assert "broker" in specs
    assert specs["training"].env["DRIFTLOOP_KAFKA__IDEMPOTENT"] == "false"

    external = CommonSettings(data_dir=tmp_path, kafka_bootstrap="kafka:9092")
    specs = {s.name: s for s in build_specs(external, None)}
    assert "broker" not in specs, "no embedded broker with an external Kafka"
    assert specs["training"].env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "DRIFTLOOP_KAFKA__IDEMPOTENT" not in specs["training"].env
