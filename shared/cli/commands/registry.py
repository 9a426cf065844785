"""`driftloop versions MODEL`, `approve`, `reject`, `rollback`, `model spec`: a model's versions
with their metrics and decisions, the production alias history, the operator's decisions (with
reasons), and the model's versioned training spec. All through the one registry client."""

from __future__ import annotations

import getpass
import json
from collections.abc import Awaitable, Callable
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from driftloop.shared.errors import DriftloopError
from driftloop.shared.registry_client import RegistryClient, run_sync
from driftloop.shared.registry_types import History, ModelVersion, SpecVersion, TrainingSpec

console = Console()
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="State directory.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]
T = TypeVar("T")
TIMES = ("at", "created_at")
"""Fields of the registry's records that hold a time (epoch seconds)."""


def _at(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def registry_call(
    data_dir: Path | None, work: Callable[[RegistryClient], Awaitable[T]], timeout: float = 15
) -> T:
    """`work` with the registry client; a failure ends the command with its message."""
    from driftloop.shared.cli.app import fail, settings

    try:
        return run_sync(settings(data_dir), work, timeout=timeout)
    except DriftloopError as exc:
        fail(str(exc))
        raise typer.Exit(1) from exc  # not reached: fail() exits


def json_record(record: Any) -> dict[str, Any]:
    """A registry record for --json output, shaped as protobuf's JSON mapping printed these
    before the CLI used the client: empty fields left out, times as RFC 3339 UTC strings."""
    return _plain(record)  # type: ignore[no-any-return]


def _plain(value: Any, key: str = "") -> Any:
    if is_dataclass(value):
        found = {f.name: _plain(getattr(value, f.name), f.name) for f in fields(value)}
        return {k: v for k, v in found.items() if v not in (None, "", 0, [], {})}
    if isinstance(value, dict):  # a map (metrics, params): every entry, zeros too
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if key in TIMES and isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return value


def actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def versions_report(versions: list[ModelVersion], history: History) -> dict[str, Any]:
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
                "slice_metrics": [json_record(s) for s in v.slice_metrics],
            }
            for v in versions
        ],
        "alias_history": [json_record(a) for a in history.aliases],
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

        async def both(r: RegistryClient) -> tuple[list[ModelVersion], History]:
            return await r.list_versions(model), await r.get_history(model)

        listed, history = registry_call(data_dir, both)
        report = versions_report(listed, history)
        if as_json:
            console.print(json.dumps(report), soft_wrap=True, highlight=False, markup=False)
        else:
            render_versions(model, report)

    @app.command()
    def approve(model: str, version: str, reason: Reason, data_dir: DataDir = None) -> None:
        """Promote a version that waits for approval (policy mode "approval")."""
        done = registry_call(data_dir, lambda r: r.approve(model, version, reason, actor()))
        console.print(f"{model} version {done.version} approved: now {done.status}")

    @app.command()
    def reject(model: str, version: str, reason: Reason, data_dir: DataDir = None) -> None:
        """Reject a candidate (for example one waiting for approval)."""
        done = registry_call(data_dir, lambda r: r.reject(model, version, reason, actor()))
        console.print(f"{model} version {done.version} rejected")

    @app.command()
    def rollback(
        model: str,
        reason: Reason,
        to: Annotated[str, typer.Option("--to", help="Version (default: the previous).")] = "",
        data_dir: DataDir = None,
    ) -> None:
        """Move production back (serving keeps the previous version loaded and follows)."""
        done = registry_call(data_dir, lambda r: r.rollback(model, reason, to, actor()))
        console.print(f"{model} production is now version {done.version}")


def spec_document(spec: TrainingSpec) -> dict[str, Any]:
    """A spec as the YAML an operator writes (and `model spec --set` reads back)."""
    doc: dict[str, Any] = {
        "task": spec.task or "classification",
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


def render_spec(found: SpecVersion) -> None:
    console.print(
        f"# {found.model} spec version {found.number}, sha256 {found.sha256[:12]}, "
        f"by {found.author or '-'} at {_at(found.created_at)} UTC",
        markup=False,
        highlight=False,
    )
    text = yaml.safe_dump(spec_document(found.spec), sort_keys=False)
    console.print(text, markup=False, highlight=False, end="")


def render_spec_history(model: str, specs: list[SpecVersion]) -> None:
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
            done = registry_call(
                data_dir,
                lambda r: r.set_spec(
                    model, spec_yaml=text or "{}", author=actor(), comment=comment
                ),
            )
            console.print(f"{model} spec is version {done.number} (sha256 {done.sha256[:12]})")
            return
        if history:
            specs = registry_call(data_dir, lambda r: r.list_specs(model))
            if as_json:
                rows = [json_record(v) for v in specs]
                console.print(json.dumps(rows), soft_wrap=True, highlight=False, markup=False)
            else:
                render_spec_history(model, specs)
            return
        one = registry_call(data_dir, lambda r: r.get_spec(model, version))
        if as_json:
            doc = json_record(one)
            console.print(json.dumps(doc), soft_wrap=True, highlight=False, markup=False)
        else:
            render_spec(one)
