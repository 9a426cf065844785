"""A real Apache Kafka broker with secured listeners, for the tests of driftloop's TLS and SASL
clients: certificates made here (a throwaway CA), SCRAM credentials created by Kafka's own
storage tool at format time, PLAIN users in the listener's JAAS config.

Listeners: SASL_SSL (TLS + SCRAM-SHA-512 or PLAIN), SSL (mutual TLS: a client certificate the CA
signed is required) and the PLAINTEXT one kafka_broker.py always opens (its readiness check).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kafka_broker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from driftloop.shared.settings import KafkaConnection

SCRAM_USER, SCRAM_PASSWORD = "driftloop-svc", "scram-secret-7f3a"
PLAIN_USER, PLAIN_PASSWORD = "driftloop-plain", "plain-secret-91c2"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass
class SecuredKafka:
    broker: kafka_broker.KafkaBroker
    ca_file: Path
    client_cert: Path
    client_key: Path

    @property
    def sasl_ssl(self) -> str:
        return self.broker.listeners["SASL_SSL"]

    @property
    def mutual_tls(self) -> str:
        return self.broker.listeners["SSL"]

    def scram(self, password: str = SCRAM_PASSWORD) -> KafkaConnection:
        return KafkaConnection(
            bootstrap=self.sasl_ssl,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=SCRAM_USER,
            sasl_password=password,
            ca_file=self.ca_file,
        )

    def plain(self, password: str = PLAIN_PASSWORD) -> KafkaConnection:
        return KafkaConnection(
            bootstrap=self.sasl_ssl,
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username=PLAIN_USER,
            sasl_password=password,
            ca_file=self.ca_file,
        )

    def tls_client(self) -> KafkaConnection:
        return KafkaConnection(
            bootstrap=self.mutual_tls,
            security_protocol="SSL",
            ca_file=self.ca_file,
            cert_file=self.client_cert,
            key_file=self.client_key,
        )

    def env(self, password: str = SCRAM_PASSWORD) -> dict[str, str]:
        """The DRIFTLOOP_ settings of a SCRAM-SHA-512 client over TLS (a process's env)."""
        digest = hashlib.sha256(password.encode()).hexdigest()[:12]
        password_file = self.ca_file.parent / f"scram-password-{digest}"
        password_file.write_text(password + "\n")
        return {
            "DRIFTLOOP_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "DRIFTLOOP_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "DRIFTLOOP_KAFKA__SASL_USERNAME": SCRAM_USER,
            "DRIFTLOOP_KAFKA__SASL_PASSWORD_FILE": str(password_file),
            "DRIFTLOOP_KAFKA__CA_FILE": str(self.ca_file),
        }


def start(workdir: Path) -> SecuredKafka:
    """Certificates in `workdir`/tls, then a broker with the secured listeners (always stop it
    with kafka_broker.stop)."""
    tls = workdir / "tls"
    tls.mkdir()
    ca = _ca()
    broker_cert, broker_key = _leaf("kafka-broker", ca)
    client_cert, client_key = _leaf("driftloop-client", ca)
    ca_file = _write(tls / "ca.crt", _pem(ca[0]))
    extra = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _pem(broker_cert) + _pem(ca[0]),
        "ssl.keystore.key": _key_pem(broker_key),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": _pem(ca[0]),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": f"{SCRAM_LOGIN} required;",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            f'{PLAIN_LOGIN} required user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
        ),
    }
    scram = f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"
    broker = kafka_broker.start(
        workdir,
        listeners={"SASL_SSL": "SASL_SSL", "SSL": "SSL"},
        extra=extra,
        format_args=["--add-scram", scram],
    )
    return SecuredKafka(
        broker,
        ca_file,
        _write(tls / "client.crt", _pem(client_cert)),
        _write(tls / "client.key", _key_pem(client_key)),
    )


Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca() -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder("driftloop-test-ca", _name("driftloop-test-ca"), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(name: str, ca: Pair) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder(name, ca[0].subject, key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
