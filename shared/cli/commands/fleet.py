"""`driftloop fleet FLEET`: a fleet's partition models in one table, most recently drifted first
(production and latest version, last drift, and whether the partition still serves the version
that drifted), and the fleet lines of `driftloop models`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from driftloop.protos.monitoring.v1 import monitoring_pb2, monitoring_pb2_grpc
from driftloop.shared.registry_types import Model

console = Console()


@dataclass(frozen=True)
class Drift:
    """The latest drift event naming a model (its own, or a fleet episode listing it)."""

    at: float
    version: str
    episode_id: str


@dataclass(frozen=True)
class PartitionRow:
    name: str
    production: str
    latest: int
    last_drift: Drift | None

    @property
    def drifting(self) -> bool:
        """Still serving the version that drifted (no new version promoted since)."""
        return self.last_drift is not None and self.production == self.last_drift.version

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "production_version": self.production,
            "latest_version": self.latest,
            "last_drift_at": _iso(self.last_drift.at) if self.last_drift else None,
            "drift_episode": self.last_drift.episode_id if self.last_drift else None,
            "drifting": self.drifting,
        }


def latest_drifts(entries: list[monitoring_pb2.DriftHistoryEntry]) -> dict[str, Drift]:
    """Model name -> its latest drift; a fleet episode counts for every partition it names."""
    found: dict[str, Drift] = {}
    for entry in entries:
        event = entry.event
        at = entry.decided_at.seconds + entry.decided_at.nanos / 1e9
        for name in (event.model, *event.partitions):
            known = found.get(name)
            if known is None or known.at <= at:
                # why the event's version for a partition of a fleet episode: the event names
                # the global model's version; a partition's own is unknown, so none matches
                version = event.version if name == event.model else "?"
                found[name] = Drift(at, version, event.episode_id)
    return found


def fleet_rows(partitions: list[Model], drifts: dict[str, Drift]) -> list[PartitionRow]:
    """One row per partition, the most recently drifted first, then by name."""
    rows = [
        PartitionRow(m.name, m.production_version, m.latest_version, drifts.get(m.name))
        for m in partitions
    ]
    return sorted(rows, key=lambda r: (-(r.last_drift.at if r.last_drift else 0.0), r.name))


def summary_lines(models: list[Model]) -> list[str]:
    """`driftloop models`: plain models one line each; a fleet one line with its partitions
    counted instead of listed."""
    partitions: dict[str, list[Model]] = {}
    for m in models:
        if m.fleet:
            partitions.setdefault(m.fleet, []).append(m)
    lines = []
    for m in models:
        if m.fleet:
            continue
        line = (
            f"{m.name}: dataset={m.dataset} production={m.production_version or '-'} "
            f"latest={m.latest_version}"
        )
        if m.spec.partition_by:
            members = partitions.get(m.name, [])
            serving = sum(1 for p in members if p.production_version)
            line += (
                f" fleet by {','.join(m.spec.partition_by)}: {len(members)} partitions, "
                f"{serving} with their own production version (the rest use the global model); "
                f"`driftloop fleet {m.name}` for the table"
            )
        lines.append(line)
    return lines


def command(
    name: Annotated[str, typer.Argument(help="The fleet (a model whose spec has partition_by).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many partitions (0: all).")] = 50,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="State directory (default ./.driftloop).")
    ] = None,
) -> None:
    """A fleet's partitions sorted by recent drift: versions, last drift, drifting now."""
    from driftloop.shared.cli.app import fail
    from driftloop.shared.cli.commands.registry import registry_call

    owner = registry_call(data_dir, lambda r: r.get_model(name), timeout=10)
    if not owner.spec.partition_by:
        fail(f"model {name} is not a fleet: its spec has no partition_by")
    partitions = registry_call(data_dir, lambda r: r.list_models(fleet=name), timeout=30)
    rows = fleet_rows(partitions, latest_drifts(_drift_entries(data_dir)))
    shown = rows[:limit] if limit > 0 else rows
    if as_json:
        doc = {
            "fleet": name,
            "partition_by": list(owner.spec.partition_by),
            "global_production_version": owner.production_version,
            "partitions": len(rows),
            "with_production": sum(1 for r in rows if r.production),
            "drifting": sum(1 for r in rows if r.drifting),
            "rows": [r.as_dict() for r in shown],
        }
        print(json.dumps(doc))  # noqa: T201 - machine-readable output
        return
    table = Table(
        title=f"fleet {name} by {', '.join(owner.spec.partition_by)}: {len(rows)} partitions, "
        f"global model production {owner.production_version or '-'}"
    )
    for column in ("partition model", "production", "latest", "last drift", "drifting"):
        table.add_column(column)
    for r in shown:
        table.add_row(
            r.name,
            r.production or "- (global)",
            str(r.latest),
            _iso(r.last_drift.at) if r.last_drift else "-",
            "yes" if r.drifting else "",
        )
    console.print(table)
    if len(shown) < len(rows):
        console.print(f"{len(rows) - len(shown)} more; --limit 0 shows all")


def _drift_entries(data_dir: Path | None) -> list[monitoring_pb2.DriftHistoryEntry]:
    """Every drift event the monitor decided; none (with a note) when it is unreachable."""
    from driftloop.shared.cli.app import settings
    from driftloop.shared.grpc.client import sync_channel

    with sync_channel(settings(data_dir), "monitoring") as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        try:
            found = stub.ListDriftEvents(monitoring_pb2.ListDriftEventsRequest(), timeout=15)
        except grpc.RpcError as exc:
            Console(stderr=True).print(f"drift history unavailable: {exc.details()}")
            return []
    return list(found.entries)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
