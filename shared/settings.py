"""Settings shared by every service and the CLI (env prefix DRIFTLOOP_, `__` for nesting).

Each service adds its own class on `ServiceSettings` with the prefix DRIFTLOOP_<SERVICE>_.
Build them once in main.py and pass them down; nothing reads os.environ elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from driftloop.shared.auth import ROLES, Credentials

SERVICES = ("ingestion", "validation", "training", "registry", "serving", "monitoring")
MAX_INSTANCES = 32
"""The most instances of one service `driftloop up --scale` starts (a typo guard)."""


def parse_scale(text: str) -> dict[str, int]:
    """`SERVICE=N[,SERVICE=N]` (as `driftloop up --scale` and DRIFTLOOP_SCALE take it) as
    {service: instances}; ValueError naming what is wrong. Which services may run more than
    once is the supervisor's decision (driftloop.shared.cli.stack.scale), not the syntax's."""
    found: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = (w.strip() for w in part.partition("="))
        if not sep or not name or not count:
            raise ValueError(f"scale {part!r}: expected SERVICE=N, e.g. validation=2")
        if name not in SERVICES:
            raise ValueError(
                f"scale {part!r}: unknown service {name!r}; one of {', '.join(SERVICES)}"
            )
        if name in found:
            raise ValueError(f"scale {part!r}: {name} is named twice")
        if not count.isdigit() or not 1 <= int(count) <= MAX_INSTANCES:
            raise ValueError(
                f"scale {part!r}: instances must be a whole number from 1 to {MAX_INSTANCES}"
            )
        found[name] = int(count)
    return found


class Ports(BaseModel):
    """Ports of the broker, each service's gRPC API and each service's Prometheus metrics."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    broker: int = 9092
    """Embedded Kafka-protocol broker (driftloop up)."""
    ingestion: int = 50051
    """Ingestion gRPC API."""
    validation: int = 50052
    """Validation gRPC API."""
    training: int = 50053
    """Training gRPC API."""
    registry: int = 50054
    """Registry gRPC API."""
    serving: int = 8001
    """Serving: the Open Inference Protocol (V2) gRPC API."""
    monitoring: int = 50056
    """Monitoring gRPC API."""
    metrics_ingestion: int = 9101
    """Prometheus metrics of ingestion."""
    metrics_validation: int = 9102
    """Prometheus metrics of validation."""
    metrics_training: int = 9103
    """Prometheus metrics of training."""
    metrics_registry: int = 9104
    """Prometheus metrics of the registry."""
    metrics_serving: int = 9105
    """Prometheus metrics of serving."""
    metrics_monitoring: int = 9106
    """Prometheus metrics of monitoring."""

    def grpc(self, service: str) -> int:
        return int(getattr(self, service))

    def metrics(self, service: str) -> int:
        return int(getattr(self, f"metrics_{service}"))


class S3Settings(BaseModel):
    """Where the S3 object store is (used when object_store is "s3")."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    endpoint: str = "127.0.0.1:9000"
    """host:port of the S3 endpoint (no scheme)."""
    access_key: SecretStr = SecretStr("")
    """Access key id; no default (a well-known default key is a shared secret): with
    object_store "s3" a service refuses to start without it."""
    secret_key: SecretStr = SecretStr("")
    """Secret access key; no default, like the access key."""
    bucket: str = "driftloop"
    """Bucket holding curated data, artifacts and profiles; created when missing."""
    secure: bool = False
    """Use HTTPS."""
    region: str = "us-east-1"
    """Region sent with requests."""


class RoleTokens(BaseModel):
    """Bearer tokens by role: DRIFTLOOP_TOKENS__<ROLE>, or a file: DRIFTLOOP_TOKENS__<ROLE>_FILE."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    ingest: SecretStr | None = None
    """Grants Ingest, IngestStream, IngestLabels and PutSchema: for data producers."""
    ingest_file: Path | None = None
    """File holding the ingest token (takes precedence)."""
    operate: SecretStr | None = None
    """Grants CreateModel, SetSpec, Promote, Approve, Reject, Rollback, StartRun: operators."""
    operate_file: Path | None = None
    """File holding the operate token (takes precedence)."""
    service: SecretStr | None = None
    """Grants RegisterVersion and ReportShadowEvidence: only training and monitoring hold it."""
    service_file: Path | None = None
    """File holding the service token (takes precedence)."""


class KafkaSettings(BaseModel):
    """How every driftloop Kafka client (services, CLI, benches) connects and produces:
    DRIFTLOOP_KAFKA__<NAME>; the address itself is DRIFTLOOP_KAFKA_BOOTSTRAP."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT (the embedded broker's), SSL (TLS), SASL_SSL (TLS + SASL) or SASL_PLAINTEXT."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    """SASL mechanism (security_protocol SASL_*). PLAIN sends the password itself: only over TLS."""
    sasl_username: str = ""
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password."""
    sasl_password_file: Path | None = None
    """File holding the SASL password (takes precedence)."""
    ca_file: Path | None = None
    """PEM CA bundle that verifies the brokers' certificates (SSL, SASL_SSL); the system's roots
    when unset. The broker's certificate must name the host clients connect to."""
    cert_file: Path | None = None
    """PEM client certificate, for brokers that require one (ssl.client.auth=required)."""
    key_file: Path | None = None
    """PEM private key of cert_file."""
    idempotent: bool | None = None
    """Idempotent producers (no duplicates when a send is retried). Unset: asked of the broker
    when each producer starts, and off with a logged warning where the broker refuses (the
    embedded one does); true: required, a broker that refuses is an error; false: off."""
    replication_factor: int = Field(default=1, ge=1)
    """Replicas of each topic driftloop creates (1 fits a single broker; a production cluster
    wants 3). Topics that exist already are left as they are."""
    partitions: int = Field(default=3, ge=1, le=1000)
    """Partitions of each keyed topic driftloop creates (those the Topics table lists with 3;
    the ones with 1 keep a single partition for their total order). A consumer group shares
    a topic's partitions among its members, so `driftloop up --scale SERVICE=N` needs N at
    most this. Topics that exist already are left as they are."""

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and (self.sasl_password or self.sasl_password_file)
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs DRIFTLOOP_KAFKA__SASL_USERNAME "
                "and DRIFTLOOP_KAFKA__SASL_PASSWORD (or __SASL_PASSWORD_FILE)"
            )
        return self


@dataclass(frozen=True)
class KafkaConnection:
    """Where and how driftloop uses Kafka: the bootstrap address with the security, producer and
    topic settings resolved (password read from its file). Built by
    CommonSettings.kafka_connection(); driftloop.shared.bus.connection makes the clients."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    idempotent: bool | None = None
    replication_factor: int = 1
    """Of the topics ensure_topics creates."""
    partitions: int = 3
    """Of the keyed topics ensure_topics creates (driftloop.shared.bus.topics.planned)."""

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """The broker and how it is reached, for messages: never the password."""
        how = self.security_protocol
        if self.sasl:
            how += f", {self.sasl_mechanism} as {self.sasl_username or '(no user)'}"
        return f"{self.bootstrap} ({how})"


class CommonSettings(BaseSettings):
    """Settings every driftloop process reads."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
    )

    data_dir: Path = Path(".driftloop")
    """Where local state lives: object store (local mode), registry DB, logs, endpoints.json."""
    bind_host: str = "127.0.0.1"
    """Interface the gRPC and metrics servers bind."""
    connect_host: str = "127.0.0.1"
    """Host used to reach other services when `addresses` names none."""
    addresses: dict[str, str] = {}
    """Per-service host:port overrides for clients, e.g. {"registry": "registry:50054"}."""
    ports: Ports = Ports()
    """Ports (see the Ports table)."""
    kafka_bootstrap: str = ""
    """Kafka bootstrap servers; empty means the embedded broker on connect_host:ports.broker."""
    kafka: KafkaSettings = KafkaSettings()
    """Kafka security (TLS, SASL), producer and topic settings: DRIFTLOOP_KAFKA__<NAME>."""
    consumer_group_membership: bool = False
    """Join Kafka consumer groups (for several replicas of a service). Off: one instance per
    service reads every partition by manual assignment, which starts in ~0.1 s instead of the
    5-20 s a group rebalance takes on the embedded broker. Offsets are committed either way."""
    scale: Annotated[dict[str, int], NoDecode] = {}
    """Instances per service that `driftloop up` starts, as SERVICE=N[,SERVICE=N] (like
    `up --scale`, which takes precedence): ingestion and validation run N processes in one
    consumer group (turning consumer_group_membership on for them), serving=N runs N workers
    on its port (serving_workers); registry, training and monitoring run once."""
    object_store: Literal["local", "s3"] = "local"
    """"local": a directory under data_dir; "s3": MinIO or any S3 endpoint (see s3)."""
    s3: S3Settings = S3Settings()
    """S3 connection (object_store = "s3")."""
    auth_token: SecretStr | None = None
    """The operator's bearer token: it grants every role (see tokens). Unset, and no role token
    set, means no authentication."""
    auth_token_file: Path | None = None
    """File holding the bearer token (takes precedence over auth_token)."""
    tokens: RoleTokens = RoleTokens()
    """One bearer token per role, each granting only its role's RPCs (SECURITY.md)."""
    tls_cert_file: Path | None = None
    """PEM certificate for every gRPC server; with tls_key_file turns TLS on."""
    tls_key_file: Path | None = None
    """PEM private key for tls_cert_file."""
    tls_ca_file: Path | None = None
    """PEM CA bundle clients use to verify servers (the system's roots when unset)."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle servers verify client certificates with; set, it turns on mutual TLS and
    every client presents tls_cert_file/tls_key_file as its own certificate."""
    log_json: bool | None = None
    """JSON logs; unset means JSON unless stderr is a terminal."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest log level written."""

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_from_text(cls, value: Any) -> Any:
        return parse_scale(value) if isinstance(value, str) else value

    @field_validator("scale")
    @classmethod
    def _scale_names_known(cls, value: dict[str, int]) -> dict[str, int]:
        return parse_scale(",".join(f"{name}={count}" for name, count in value.items()))

    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.connect_host}:{self.ports.broker}"

    def kafka_connection(self) -> KafkaConnection:
        """How every Kafka client of this process connects (the one place they all read)."""
        k = self.kafka
        return KafkaConnection(
            bootstrap=self.bootstrap(),
            security_protocol=k.security_protocol,
            sasl_mechanism=k.sasl_mechanism,
            sasl_username=k.sasl_username,
            sasl_password=_secret(k.sasl_password, k.sasl_password_file),
            ca_file=k.ca_file,
            cert_file=k.cert_file,
            key_file=k.key_file,
            idempotent=k.idempotent,
            replication_factor=k.replication_factor,
            partitions=k.partitions,
        )

    def address(self, service: str) -> str:
        """host:port where clients reach `service`'s gRPC API."""
        return self.addresses.get(service) or f"{self.connect_host}:{self.ports.grpc(service)}"

    def token(self) -> str | None:
        """The all-roles token (auth_token_file, else auth_token)."""
        return _secret(self.auth_token, self.auth_token_file)

    def credentials(self) -> Credentials:
        """Every token, by role: what servers accept and clients send."""
        by_role = {
            role: token
            for role in ROLES
            if (token := _secret(getattr(self.tokens, role), getattr(self.tokens, f"{role}_file")))
        }
        return Credentials(admin=self.token(), by_role=by_role)

    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().strip() or None
    return value.get_secret_value() if value else None


class ServiceSettings(BaseSettings):
    """Base of the per-service settings classes (each sets its own env_prefix)."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="forbid", use_attribute_docstrings=True
    )
