"""Several instances of a service under `driftloop up --scale SERVICE=N`: which services may run
more than once (and why the others may not), the ports of the extra instances, and the
environment that puts every instance of a service in one consumer group.

Ingestion and validation scale out as N processes: each reads its share of the partitions of its
topics in one consumer group, and the state they depend on is not in their memory (validation's
curation is idempotent by batch id against the dataset's manifest in the object store, and each
dataset's partition has one owner at a time; ingestion holds nothing across requests). Serving
scales up as N workers on its one port (DRIFTLOOP_SERVING_WORKERS). The others run once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from driftloop.shared.bus import topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.errors import Conflict
from driftloop.shared.settings import SERVICES, CommonSettings

GROUP_TOPICS: dict[str, tuple[str, ...]] = {
    "ingestion": (topics.INGEST_JSON, topics.LABELS_JSON),
    "validation": (topics.RECORDS_RAW,),
}
"""Services that scale out as processes, with the topics their consumer groups share out: every
instance must get a partition of each, or it never reports ready."""
WORKERS = "serving"
"""`--scale serving=N` sets DRIFTLOOP_SERVING_WORKERS=N: N worker processes on serving's one
port (SO_REUSEPORT), supervised as one service (a worker that dies takes the others down)."""
REFUSED: dict[str, str] = {
    "registry": "the registry is the one writer of its SQLite database (registry.db); run one",
    "training": (
        "its run queue (training.db, SQLite) requeues every running run when an instance "
        "starts, so a second instance would retrain its sibling's runs; run one"
    ),
    "monitoring": (
        "only its predictions awaiting labels move with their partitions between instances "
        "(adapters/moves.py); live drift windows and detector state would start afresh on a "
        "new owner, and a fleet's labels (keyed by the fleet) can reach another instance than "
        "its partitions' predictions; run one until that state moves too (#19)"
    ),
}


@dataclass(frozen=True)
class Instance:
    """One process of a service: instance 1 on the service's configured ports, the others on
    ports picked when the stack starts (kept across restarts)."""

    service: str
    index: int
    grpc_port: int
    metrics_port: int

    @property
    def name(self) -> str:
        """The process name: the service's for instance 1 (so everything that knows one
        process per service keeps working), SERVICE-INDEX for the others."""
        return self.service if self.index == 1 else f"{self.service}-{self.index}"


def check_scale(scale: Mapping[str, int]) -> None:
    """Raise Conflict, naming the service and why, for a service that cannot run N times."""
    for service, count in scale.items():
        if count > 1 and service in REFUSED:
            raise Conflict(f"cannot scale {service} to {count}: {REFUSED[service]}")


def plan(common: CommonSettings, pick_port: Callable[[], int]) -> list[Instance]:
    """Every service process `up` starts, in start order (a service's instances together)."""
    found = []
    for service in SERVICES:
        found.append(
            Instance(service, 1, common.ports.grpc(service), common.ports.metrics(service))
        )
        if service in GROUP_TOPICS:
            for index in range(2, common.scale.get(service, 1) + 1):
                found.append(Instance(service, index, pick_port(), pick_port()))
    return found


def instance_env(common: CommonSettings, instance: Instance) -> dict[str, str]:
    """What an instance needs besides the stack's service environment."""
    count = common.scale.get(instance.service, 1)
    env: dict[str, str] = {}
    if instance.service in GROUP_TOPICS and count > 1:
        # why: without group membership each instance would read every partition by manual
        # assignment, and every batch would be handled by all of them
        env["DRIFTLOOP_CONSUMER_GROUP_MEMBERSHIP"] = "true"
    if instance.index > 1:
        service = instance.service.upper()
        env[f"DRIFTLOOP_PORTS__{service}"] = str(instance.grpc_port)
        env[f"DRIFTLOOP_PORTS__METRICS_{service}"] = str(instance.metrics_port)
    if instance.service == WORKERS and count > 1:
        env["DRIFTLOOP_SERVING_WORKERS"] = str(count)
    return env


async def check_partitions(target: KafkaTarget, scale: Mapping[str, int]) -> None:
    """Raise Conflict when a scaled service has more instances than a topic it shares has
    partitions (the extra instance would get none and never become ready)."""
    wanted = {s: n for s, n in scale.items() if s in GROUP_TOPICS and n > 1}
    if not wanted:
        return
    names = sorted({t for s in wanted for t in GROUP_TOPICS[s]})
    counts = await topics.partition_counts(target, names)
    for service, count in wanted.items():
        for topic in GROUP_TOPICS[service]:
            if count > counts[topic]:
                raise Conflict(
                    f"cannot scale {service} to {count}: topic {topic} has {counts[topic]} "
                    f"partitions, so {count - counts[topic]} instance(s) would read nothing; "
                    f"create the topics with DRIFTLOOP_KAFKA__PARTITIONS={count} or more (or "
                    "add partitions to the existing topic)"
                )
