"""`driftloop versions MODEL`, `approve`, `reject`, `rollback`, `model spec`: a model's versions
with their metrics and decisions, the production alias history, the operator's decisions (with
reasons), and the model's versioned training spec."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc

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
    from driftloop.shared.grpc.client import auth_metadata, sync_channel

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
                "spec_version": v.lineage.spec_version,
                "slice_metrics": [as_dict(s) for s in v.slice_metrics],
            }
            for v in versions
        ],
        "alias_history": [as_dict(a) for a in history.aliases],
        "shadow_version": next((v.version for v in versions if v.status == "shadow"), ""),
    }


def render_versions(model: str, report: dict[str, Any]) -> None:
    table = Table(title=f"versions of {model}")
    for col in ("version", "status", "created (UTC)", "metrics", "trigger", "spec", "decision"):
        table.add_column(col)
    for v in report["versions"]:
        color = {
            "production": "green",
            "rejected": "red",
            "pending_approval": "yellow",
            "shadow": "cyan",
        }.get(v["status"], "")
        status = f"[{color}]{v['status']}[/{color}]" if color else v["status"]
        metrics = ", ".join(f"{k} {x:.3f}" for k, x in sorted(v["metrics"].items()))
        spec = f"v{v['spec_version']}" if v["spec_version"] else "-"
        table.add_row(
            v["version"], status, v["created_at"], metrics, v["trigger"], spec, v["decision_reason"]
        )
    console.print(table)
    if report.get("shadow_version"):
        console.print(
            f"shadow alias: version {report['shadow_version']} (runs beside production on live "
            "traffic until live labels decide)"
        )
    aliases = Table(title="alias history")
    for col in ("at (UTC)", "alias", "version", "from", "action", "by", "why"):
        aliases.add_column(col)
    for a in report["alias_history"]:
        aliases.add_row(
            a.get("at", "-").replace("T", " ")[:19],
            a.get("alias", "production"),
            a.get("version", "-"),
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


def spec_document(spec: registry_pb2.TrainingSpec) -> dict[str, Any]:
    """A spec as the YAML an operator writes (and `model spec --set` reads back)."""
    doc: dict[str, Any] = {
        "estimator": spec.estimator,
        "params": {k: json.loads(v) for k, v in sorted(spec.params.items())},
        "features": list(spec.features),
        "window_rows": spec.window_rows,
        "holdout_fraction": spec.holdout_fraction,
        "min_rows": spec.min_rows,
        "slice_columns": list(spec.slice_columns),
    }
    if spec.search.param_grid:
        doc["search"] = {
            "param_grid": {k: json.loads(v) for k, v in sorted(spec.search.param_grid.items())},
            "cv": spec.search.cv,
            "max_candidates": spec.search.max_candidates,
            "scoring": spec.search.scoring,
        }
    if spec.schedule_seconds:
        doc["schedule"] = spec.schedule_seconds
    p = spec.policy
    doc["policy"] = {
        "metric": p.metric,
        "margin": p.margin,
        "floor": p.floor,
        "mode": p.mode,
        "slice_tolerance": p.slice_tolerance,
        "min_slice_rows": p.min_slice_rows,
    }
    if p.mode == "shadow":
        doc["policy"]["shadow_min_labels"] = p.shadow_min_labels
        doc["policy"]["shadow_max_labels"] = p.shadow_max_labels
    return doc


def render_spec(found: registry_pb2.SpecVersion) -> None:
    console.print(
        f"# {found.model} spec version {found.number}, sha256 {found.sha256[:12]}, "
        f"by {found.author or '-'} at {_at(found.created_at)} UTC",
        markup=False,
        highlight=False,
    )
    text = yaml.safe_dump(spec_document(found.spec), sort_keys=False)
    console.print(text, markup=False, highlight=False, end="")


def render_spec_history(model: str, specs: list[registry_pb2.SpecVersion]) -> None:
    table = Table(title=f"spec versions of {model}")
    for col in ("version", "sha256", "author", "created (UTC)", "estimator", "comment"):
        table.add_column(col)
    for v in specs:
        table.add_row(
            str(v.number),
            v.sha256[:12],
            v.author,
            _at(v.created_at),
            v.spec.estimator,
            v.comment,
        )
    console.print(table)


def register_spec_command(model_app: typer.Typer) -> None:
    @model_app.command("spec")
    def spec(
        model: str,
        set_file: Annotated[
            Path | None, typer.Option("--set", help="New spec (YAML): a new spec version.")
        ] = None,
        history: Annotated[bool, typer.Option("--history", help="List spec versions.")] = False,
        version: Annotated[int, typer.Option("--version", help="Show this version.")] = 0,
        comment: Annotated[str, typer.Option(help="Why the spec changes (with --set).")] = "",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Show a model's training spec, set a new version (--set), or list versions."""
        if set_file is not None:
            from driftloop.shared.cli.app import fail

            try:
                text = set_file.read_text()
            except OSError as exc:
                fail(f"cannot read training spec {set_file}: {exc}")
                return
            request = registry_pb2.SetSpecRequest(
                model=model, spec_yaml=text or "{}", author=actor(), comment=comment
            )
            done = _registry(data_dir, "SetSpec", request, mutating=True)
            console.print(f"{model} spec is version {done.number} (sha256 {done.sha256[:12]})")
            return
        if history:
            found = _registry(data_dir, "ListSpecs", registry_pb2.ListSpecsRequest(model=model))
            specs = list(found.specs)
            if as_json:
                rows = [
                    json_format.MessageToDict(v, preserving_proto_field_name=True) for v in specs
                ]
                console.print(json.dumps(rows), soft_wrap=True, highlight=False, markup=False)
            else:
                render_spec_history(model, specs)
            return
        one = _registry(
            data_dir, "GetSpec", registry_pb2.GetSpecRequest(model=model, number=version)
        )
        if as_json:
            doc = json_format.MessageToDict(one, preserving_proto_field_name=True)
            console.print(json.dumps(doc), soft_wrap=True, highlight=False, markup=False)
        else:
            render_spec(one)
