"""`driftloop trace ID [--json]`: resolve a drift event id, correlation id, run id or version to
its correlation id, gather the registry's, training's and the topics' records, print the chain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from driftloop.protos.events.v1 import events_pb2
from driftloop.protos.training.v1 import training_pb2, training_pb2_grpc
from driftloop.shared.bus import connection, envelope, topics
from driftloop.shared.bus.connection import KafkaTarget
from driftloop.shared.cli.commands.trace_chain import Sources, build_chain
from driftloop.shared.cli.partitions import every_partition
from driftloop.shared.errors import DriftloopError
from driftloop.shared.grpc.client import sync_channel
from driftloop.shared.registry_client import RegistryClient, run_sync
from driftloop.shared.registry_types import History, ModelVersion
from driftloop.shared.settings import CommonSettings

CHAIN_TOPICS = (topics.DRIFT, topics.MODELS, topics.DEPLOYMENTS)
console = Console()
err = Console(stderr=True)


def parse_version(ident: str, version: str) -> tuple[str, str] | None:
    """("model", "3") for "model:3" or ("model", "3") given separately; None otherwise."""
    if version:
        return ident, version
    model, sep, number = ident.rpartition(":")
    return (model, number) if sep and model and number.isdigit() else None


def resolve(
    common: CommonSettings, ident: str, version: str = ""
) -> tuple[str, list[ModelVersion]]:
    """(correlation id, versions named directly) for any kind of id."""
    named = parse_version(ident, version)
    if named is not None:
        model, number = named
        found = run_sync(common, lambda r: r.get_version(model, number), timeout=10)
        return found.lineage.correlation_id or found.run_id, [found]
    with sync_channel(common, "training") as channel:
        try:
            run = training_pb2_grpc.TrainingServiceStub(channel).GetRun(
                training_pb2.GetRunRequest(run_id=ident), timeout=10
            )
            return run.correlation_id, []
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
    return ident, []


async def _registry_records(
    registry: RegistryClient, correlation_id: str, named: list[ModelVersion]
) -> tuple[list[ModelVersion], dict[str, History]]:
    """The chain's versions (named, or found by correlation id) and each one's history."""
    found = await registry.search_versions(correlation_id=correlation_id)
    versions = list({(v.model, v.version): v for v in [*named, *found]}.values())
    return versions, {v.version: await registry.get_history(v.model, v.version) for v in versions}


def gather(common: CommonSettings, correlation_id: str, named: list[ModelVersion]) -> Sources:
    src = Sources(correlation_id)
    src.versions, src.history = run_sync(
        common, lambda r: _registry_records(r, correlation_id, named), timeout=10
    )
    with sync_channel(common, "training") as channel:
        src.runs = list(
            training_pb2_grpc.TrainingServiceStub(channel)
            .ListRuns(training_pb2.ListRunsRequest(correlation_id=correlation_id), timeout=10)
            .runs
        )
    try:
        src.events = asyncio.run(read_chain_events(common.kafka_connection(), correlation_id))
    except (KafkaError, OSError, TimeoutError, DriftloopError):
        src.bus_read = False
    return src


async def read_chain_events(
    bootstrap: KafkaTarget, correlation_id: str, timeout: float = 10.0
) -> list[events_pb2.Envelope]:
    """Every event of the chain still on the drift, models and deployments topics."""
    consumer = connection.consumer(bootstrap, enable_auto_commit=False)
    await connection.start(consumer, bootstrap)
    try:
        tps = await every_partition(bootstrap, CHAIN_TOPICS)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[events_pb2.Envelope] = []
        loop = asyncio.get_running_loop()
        deadline, drained = loop.time() + timeout, False
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    event = _decode(record.value)
                    if event is not None and correlation_id in (
                        event.correlation_id,
                        event.event_id,
                    ):
                        found.append(event)
            caught_up = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            # why: the embedded broker's high watermark can point inside the last batch
            if caught_up and not batch:
                if drained:
                    break
                drained = True
        return found
    finally:
        await consumer.stop()


def _decode(value: bytes | None) -> events_pb2.Envelope | None:
    try:
        return envelope.decode(value)
    except Exception:  # noqa: BLE001 - a trace shows what it can decode
        return None


def render(chain: dict[str, Any], out: Console = console) -> None:
    title = f"trace {chain['correlation_id']}"
    if chain["model"]:
        title += f" — model {chain['model']} version {chain['version'] or '-'}"
    table = Table(title=title)
    for col, justify in (("at (UTC)", "left"), ("+s", "right"), ("t (s)", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("step")
    table.add_column("detail")
    for s in chain["steps"]:
        table.add_row(
            s["at_iso"][11:23] if s["at_iso"] else "-",
            "" if s["seconds"] is None else f"{s['seconds']:.2f}",
            "" if s["since_start"] is None else f"{s['since_start']:.2f}",
            s["step"],
            s["detail"] + (f" [dim]({s['source']})[/dim]" if s["source"] else ""),
        )
    out.print(table)
    if chain["complete"]:
        out.print("[green]complete chain[/green]")
    else:
        out.print(f"[yellow]chain incomplete[/yellow]: missing {', '.join(chain['missing'])}")


def register(app: typer.Typer) -> None:
    @app.command()
    def trace(
        ident: Annotated[
            str, typer.Argument(help="Drift event id, correlation id, run id, or MODEL:VERSION.")
        ],
        version: Annotated[str, typer.Argument(help="VERSION when ID is a model name.")] = "",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="State directory.")
        ] = None,
    ) -> None:
        """The causal chain of a drift episode or version: evidence, run, decision, deployment."""
        from driftloop.shared.cli.app import fail, rpc_error, settings

        common = settings(data_dir)
        try:
            correlation_id, named = resolve(common, ident, version)
            chain = build_chain(gather(common, correlation_id, named))
        except DriftloopError as exc:  # the registry's, through the client's error map
            fail(str(exc))
            return
        except grpc.RpcError as exc:  # training's
            rpc_error(exc)
            return
        if not chain["steps"]:
            err.print(f"[red]error:[/red] nothing known about {ident!r}")
            raise typer.Exit(1)
        if as_json:
            console.print(json.dumps(chain), soft_wrap=True, highlight=False, markup=False)
        else:
            render(chain)
