"""`driftloop status`: gather the whole stack's state into one report, and render it.

Consumer lag is computed from the broker's high watermark, which on the embedded Tansu broker
can trail the real end of a partition by one batch: lag figures are approximate there.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.auth import Credentials
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.cli.output import as_dict
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.cli.stack.embedded import health_of, instance_addresses
from driftloop.shared.cli.terminal import outside
from driftloop.shared.errors import DriftloopError
from driftloop.shared.grpc.client import sync_channel
from driftloop.shared.registry_client import run_sync
from driftloop.shared.settings import CommonSettings, KafkaConnection

CONSUMER_GROUPS = {
    "validation": [topics.RECORDS_RAW],
    "ingestion-json": [topics.INGEST_JSON],
    "training": [topics.DRIFT],
    "training-auto": [topics.RECORDS_VALIDATED],
    "ingestion-labels-json": [topics.LABELS_JSON],
    "monitoring": [topics.PREDICTIONS, topics.LABELS, topics.DEPLOYMENTS],
    "serving-inference": [topics.INFERENCE_REQUESTS],
}
LAG_NOTE = (
    "approximate: the embedded broker's high watermark can trail the real end of a "
    "partition by one batch"
)


def collect_status(common: CommonSettings) -> dict[str, Any]:
    services = {}
    # one row per service, then one per extra instance of a scaled one (`up --scale`: SERVICE-N)
    for process, (name, address) in instance_addresses(common).items():
        address = common.address(name) if process == name else address
        state = health_of(common, name, address)
        services[process] = {"address": address, "status": state, "healthy": state == "SERVING"}
    host, _, port = common.bootstrap().split(",")[0].strip().rpartition(":")
    report: dict[str, Any] = {
        "services": services,
        "broker": {"bootstrap": common.bootstrap(), "reachable": _reachable(host, int(port))},
        "models": _models(common),
        "lag": {},
        "lag_note": LAG_NOTE,
        "latest": {},
    }
    if report["broker"]["reachable"]:
        try:
            found = asyncio.run(_from_broker(common.kafka_connection()))
            report["lag"], report["latest"] = found
        except (DriftloopError, OSError) as exc:  # refused credentials, bad TLS files
            report["broker"]["error"] = str(exc)
    report["latest"]["training"] = _latest_run(common)
    report["config"] = config_summary(common)
    return redact(report, secrets_of(common))


REDACTED = "***"


def secrets_of(common: CommonSettings) -> list[str]:
    """The secret values this process knows (token, S3 keys, Kafka password), longest first."""
    found = [common.s3.access_key.get_secret_value(), common.s3.secret_key.get_secret_value()]
    try:
        credentials = common.credentials()
        found += [credentials.admin or "", *credentials.by_role.values()]
        found.append(common.kafka_connection().sasl_password or "")
    except OSError:
        pass  # an unreadable token or password file: nothing to redact
    # why: a secret of a few characters would blank out ordinary words of the report
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def config_summary(common: CommonSettings) -> dict[str, Any]:
    """Where the stack keeps things and which controls are on; secrets only as "***"."""
    try:
        credentials = common.credentials()
    except OSError:
        credentials = Credentials()
    token_set = credentials.admin is not None
    summary: dict[str, Any] = {
        "data_dir": str(common.data_dir),
        "object_store": common.object_store,
        "auth": "bearer token required on mutating RPCs" if credentials.configured else "none",
        "auth_token": REDACTED if token_set else None,
        "role_tokens": sorted(credentials.by_role),
        "tls": common.tls_enabled(),
        "mutual_tls": common.tls_client_ca_file is not None,
    }
    summary["kafka"] = _kafka_summary(common)
    if common.object_store == "s3":
        summary["s3"] = {
            "endpoint": common.s3.endpoint,
            "bucket": common.s3.bucket,
            "access_key": REDACTED,
            "secret_key": REDACTED,
        }
    return summary


def _kafka_summary(common: CommonSettings) -> dict[str, Any]:
    kafka = common.kafka
    summary: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        password_set = kafka.sasl_password is not None or kafka.sasl_password_file is not None
        summary.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_username=kafka.sasl_username,
            sasl_password=REDACTED if password_set else None,
        )
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        summary["ca_file"] = str(kafka.ca_file) if kafka.ca_file else "(system roots)"
        summary["client_certificate"] = kafka.cert_file is not None
    summary["idempotent"] = {None: "where the broker allows", True: "required", False: "off"}[
        kafka.idempotent
    ]
    return summary


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every occurrence of a secret inside any string replaced by "***" (a
    secret can reach the report through an error message or an address)."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _models(common: CommonSettings) -> list[dict[str, Any]]:
    try:
        models = run_sync(common, lambda r: r.list_models(), timeout=3)
    except DriftloopError:  # the registry's health is reported with the services
        return []
    return [
        {
            "name": m.name,
            "dataset": m.dataset,
            "production_version": m.production_version,
            "latest_version": str(m.latest_version),
        }
        for m in models
    ]


def _latest_run(common: CommonSettings) -> dict[str, Any] | None:
    with sync_channel(common, "training") as channel:
        try:
            reply = training_pb2_grpc.TrainingServiceStub(channel).ListRuns(
                training_pb2.ListRunsRequest(limit=1), timeout=3
            )
        except grpc.RpcError:
            return None
    if not reply.runs:
        return None
    return as_dict(reply.runs[0], with_defaults=False)


async def _from_broker(kafka: KafkaConnection) -> tuple[dict[str, Any], dict[str, Any]]:
    consumer = connection.consumer(kafka, enable_auto_commit=False)
    try:
        await connection.start(consumer, kafka)
        lag = await _lag(kafka, consumer)
        latest = await _latest_events(kafka, consumer)
        return lag, latest
    except KafkaError:
        return {}, {}
    finally:
        await consumer.stop()


async def _lag(kafka: KafkaConnection, consumer: AIOKafkaConsumer) -> dict[str, Any]:
    # why: a consumer bound to the group reads its committed offsets; aiokafka's admin
    # list_consumer_group_offsets cannot decode the embedded broker's OffsetFetch reply.
    lag: dict[str, Any] = {}
    every = await every_partition(kafka, [t for names in CONSUMER_GROUPS.values() for t in names])
    ends = await consumer.end_offsets(every) if every else {}
    for group, names in CONSUMER_GROUPS.items():
        tps = [tp for tp in every if tp.topic in names]
        reader = connection.consumer(kafka, group_id=group, enable_auto_commit=False)
        await connection.start(reader, kafka)
        try:
            per_topic: dict[str, int] = {}
            for tp in tps:
                done = await reader.committed(tp)
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends[tp] - (done or 0))
            lag[group] = per_topic
        finally:
            await reader.stop()
    return lag


async def _latest_events(kafka: KafkaConnection, consumer: AIOKafkaConsumer) -> dict[str, Any]:
    """The newest drift, promotion and deployment events, read from the topics' tails."""
    wanted = {topics.DRIFT: "drift", topics.MODELS: "promotion", topics.DEPLOYMENTS: "deployment"}
    tps = await every_partition(kafka, wanted)
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, max(0, ends[tp] - 50))
    latest: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + 5
    drained = False
    while asyncio.get_running_loop().time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                _remember_latest(latest, wanted[record.topic], record)
        caught_up = all([await consumer.position(tp) >= ends[tp] for tp in tps])
        # why: Tansu's high watermark can point inside the last batch; one more empty poll
        # after reaching it makes sure that batch's later records were read too.
        if caught_up and not batch:
            if drained:
                break
            drained = True
    return latest


def _remember_latest(latest: dict[str, Any], kind: str, record: Any) -> None:
    try:
        event = envelope.decode(record.value)
    except Exception:  # noqa: BLE001 - status shows what it can decode
        return
    if record.topic == topics.MODELS:
        if event.type == "ModelNeedsAttention":
            kind = "attention"  # the registry asks a human to look at a decision
        elif event.type not in ("ModelPromoted", "ModelRejected"):
            return
    latest[kind] = {
        "type": event.type,
        "at": event.occurred_at.ToJsonString(),
        "correlation_id": event.correlation_id,
        **as_dict(envelope.payload(event), with_defaults=False),
    }


def render_status(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="driftloop services")
    for col in ("service", "address", "status"):
        table.add_column(col)
    for name, svc in report["services"].items():
        color = "green" if svc["healthy"] else "red"
        table.add_row(name, svc["address"], f"[{color}]{svc['status']}[/{color}]")
    console.print(table)
    broker = report["broker"]
    console.print(
        f"broker {broker['bootstrap']}: "
        f"{'reachable' if broker['reachable'] else '[red]unreachable[/red]'}"
    )
    if broker.get("error"):
        console.print(f"[red]broker: {escape(broker['error'])}[/red]")
    models = Table(title="models")
    for col in ("model", "dataset", "production", "latest"):
        models.add_column(col)
    for m in report["models"]:
        models.add_row(m["name"], m["dataset"], m["production_version"] or "-", m["latest_version"])
    console.print(models)
    lag = Table(title=f"consumer lag ({LAG_NOTE})")
    for col in ("group", "topic", "lag"):
        lag.add_column(col)
    for group, per_topic in report["lag"].items():
        for topic, value in per_topic.items():
            lag.add_row(group, topic, str(value))
    console.print(lag)
    for kind, event in report["latest"].items():
        if not event:
            continue
        if kind == "attention":
            console.print(
                f"[bold yellow]needs a human:[/bold yellow] model {outside(event.get('model'))} "
                f"v{outside(event.get('version'))}: {outside(event.get('reason'))}"
            )
            continue
        console.print(f"latest {kind}: {outside(event)}")
    config = report.get("config")
    if config:
        shown = ", ".join(f"{k}={v}" for k, v in config.items() if v not in (None, ""))
        console.print(f"config: {shown}", markup=False, highlight=False)
