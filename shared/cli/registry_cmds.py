"""`driftloop versions MODEL`, `approve`, `reject`, `rollback`: a model's versions with their
metrics and decisions, the production alias history, and the operator's decisions (with reasons)."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from driftloop.registry.v1 import registry_pb2, registry_pb2_grpc

console = Console()
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State directory.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]


def _at(ts: Any) -> str:
    nanos = ts.ToNanoseconds()
    if not nanos:
        return "-"
    return datetime.fromtimestamp(nanos / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _registry(data_dir: Path | None, method: str, request: Any, mutating: bool = False) -> Any:
    from driftloop.shared.cli.app import rpc_error, settings
    from driftloop.shared.grpc_client import auth_metadata, sync_channel

    common = settings(data_dir)
    with sync_channel(common, "registry") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            return getattr(stub, method)(
                request, metadata=auth_metadata(common) if mutating else (), timeout=15
            )
        except grpc.RpcError as exc:
            rpc_error(exc)


def actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def versions_report(
    versions: list[registry_pb2.ModelVersion], history: registry_pb2.History
) -> dict[str, Any]:
    def as_dict(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    return {
        "versions": [
            {
                "version": v.version,
                "status": v.status,
                "created_at": _at(v.created_at),
                "metrics": dict(v.metrics),
                "trigger": v.lineage.trigger,
                "parent_version": v.lineage.parent_version,
                "correlation_id": v.lineage.correlation_id,
                "decision_reason": v.decision_reason,
            }
            for v in versions
        ],
        "alias_history": [as_dict(a) for a in history.aliases],
    }


def render_versions(model: str, report: dict[str, Any]) -> None:
    table = Table(title=f"versions of {model}")
    for col in ("version", "status", "created (UTC)", "metrics", "trigger", "decision"):
        table.add_column(col)
    for v in report["versions"]:
        color = {"production": "green", "rejected": "red", "pending_approval": "yellow"}.get(
            v["status"], ""
        )
        status = f"[{color}]{v['status']}[/{color}]" if color else v["status"]
        metrics = ", ".join(f"{k} {x:.3f}" for k, x in sorted(v["metrics"].items()))
        table.add_row(
            v["version"], status, v["created_at"], metrics, v["trigger"], v["decision_reason"]
        )
    console.print(table)
    aliases = Table(title="production alias history")
    for col in ("at (UTC)", "version", "from", "action", "by", "why"):
        aliases.add_column(col)
    for a in report["alias_history"]:
        aliases.add_row(
            a.get("at", "-").replace("T", " ")[:19],
            a.get("version", ""),
            a.get("previous_version", "-"),
            a.get("action", ""),
            a.get("actor", ""),
            a.get("reason", ""),
        )
    console.print(aliases)


def register(app: typer.Typer) -> None:
    @app.command()
    def versions(
        model: str,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """A model's versions (status, metrics, decision) and who moved production, when, why."""
        listed = _registry(data_dir, "ListVersions", registry_pb2.ListVersionsRequest(model=model))
        history = _registry(data_dir, "GetHistory", registry_pb2.GetHistoryRequest(model=model))
        report = versions_report(list(listed.versions), history)
        if as_json:
            console.print(json.dumps(report), soft_wrap=True, highlight=False, markup=False)
        else:
            render_versions(model, report)

    @app.command()
    def approve(model: str, version: str, reason: Reason, data_dir: DataDir = None) -> None:
        """Promote a version that waits for approval (policy mode "approval")."""
        request = registry_pb2.DecisionRequest(
            model=model, version=version, reason=reason, actor=actor()
        )
        done = _registry(data_dir, "Approve", request, mutating=True)
        console.print(f"{model} version {done.version} approved: now {done.status}")

    @app.command()
    def reject(model: str, version: str, reason: Reason, data_dir: DataDir = None) -> None:
        """Reject a candidate (for example one waiting for approval)."""
        request = registry_pb2.DecisionRequest(
            model=model, version=version, reason=reason, actor=actor()
        )
        done = _registry(data_dir, "Reject", request, mutating=True)
        console.print(f"{model} version {done.version} rejected")

    @app.command()
    def rollback(
        model: str,
        reason: Reason,
        to: Annotated[str, typer.Option("--to", help="Version (default: the previous).")] = "",
        data_dir: DataDir = None,
    ) -> None:
        """Move production back (serving keeps the previous version loaded and follows)."""
        request = registry_pb2.DecisionRequest(
            model=model, version=to, reason=reason, actor=actor()
        )
        done = _registry(data_dir, "Rollback", request, mutating=True)
        console.print(f"{model} production is now version {done.version}")
