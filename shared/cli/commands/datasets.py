"""`driftloop datasets`, `driftloop schema DATASET [--declare FILE]`, `driftloop quality DATASET`:
curated datasets, their schemas (declared from YAML) and quality reports, from validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from driftloop.protos.validation.v1 import validation_pb2, validation_pb2_grpc
from driftloop.shared.cli.output import as_dict
from driftloop.shared.cli.terminal import outside
from driftloop.shared.errors import InvalidInput

SCHEMA_CHANGE_HEADER = "x-driftloop-schema-change"
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="State directory (default ./.driftloop or DRIFTLOOP_DATA_DIR)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MAX_SCHEMA_FILE_CHARS = 4 * 1024 * 1024
"""Largest schema YAML file `driftloop schema --declare` reads."""


def schema_from_yaml(dataset: str, path: Path) -> validation_pb2.DatasetSchema:
    """Read a schema file: `columns:` a list of {name, type, required, min, max, categories,
    unique}; `key: true` is another way to write `unique: true`."""
    try:
        text = path.read_text()
        if len(text) > MAX_SCHEMA_FILE_CHARS:
            raise InvalidInput(
                f"{path}: {len(text):,} characters; a schema file may hold "
                f"{MAX_SCHEMA_FILE_CHARS:,}"
            )
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            # why: aliases let a few bytes expand into billions of values once loaded
            raise InvalidInput(f"{path}: YAML anchors and aliases (*name) are not allowed")
        body = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read schema file {path}: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("columns"), list):
        raise InvalidInput(f"{path}: expected a mapping with a `columns:` list")
    unknown = set(body) - {"dataset", "columns"}
    if unknown:
        raise InvalidInput(f"{path}: unknown keys {sorted(unknown)}")
    columns = [_key_alias(c) for c in body["columns"]]
    try:
        return json_format.ParseDict(
            {"dataset": dataset, "columns": columns}, validation_pb2.DatasetSchema()
        )
    except json_format.ParseError as exc:
        raise InvalidInput(f"{path}: {exc}") from exc


def _key_alias(column: Any) -> Any:
    """`key: true` -> `unique: true` (both may not disagree)."""
    if not isinstance(column, dict) or "key" not in column:
        return column
    column = dict(column)
    key = column.pop("key")
    if "unique" in column and column["unique"] != key:
        raise InvalidInput(f"column {column.get('name')!r}: `key` and `unique` disagree")
    column["unique"] = key
    return column


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _call(data_dir: Path | None, method: str, request: Any, **kwargs: Any) -> Any:
    from driftloop.shared.cli.app import settings
    from driftloop.shared.grpc.client import sync_channel

    with sync_channel(settings(data_dir), "validation") as channel:
        stub = validation_pb2_grpc.ValidationServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=10, **kwargs)
        except grpc.RpcError as exc:
            _fail(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]


def datasets(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """List datasets with their manifest version and curated row count."""
    reply = _call(data_dir, "ListDatasets", validation_pb2.ListDatasetsRequest())
    if as_json:
        console.print_json(json.dumps(as_dict(reply)))
        return
    table = Table("dataset", "manifest version", "curated rows")
    for d in reply.datasets:
        table.add_row(outside(d.dataset), str(d.manifest_version), f"{d.curated_rows:,}")
    console.print(table)


def schema(
    dataset: str,
    declare: Annotated[
        Path | None, typer.Option(help="Declare the schema from this YAML file.", exists=True)
    ] = None,
    breaking: Annotated[
        bool, typer.Option(help="Allow an incompatible change (type change, removed column).")
    ] = False,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Show a dataset's schema, or declare it from a YAML file with --declare."""
    if declare is not None:
        from driftloop.shared.auth import INGEST
        from driftloop.shared.cli.app import settings
        from driftloop.shared.grpc.client import auth_metadata

        try:
            request = schema_from_yaml(dataset, declare)
        except InvalidInput as exc:
            _fail(str(exc))
            return
        metadata = list(auth_metadata(settings(data_dir), INGEST) or [])
        if breaking:
            metadata.append((SCHEMA_CHANGE_HEADER, "breaking"))
        reply = _call(data_dir, "PutSchema", request, metadata=metadata)
    else:
        reply = _call(data_dir, "GetSchema", validation_pb2.GetSchemaRequest(dataset=dataset))
    if as_json:
        console.print_json(json.dumps(as_dict(reply, with_defaults=False)))
        return
    table = Table("column", "type", "required", "unique", "min", "max", "categories")
    for c in reply.columns:
        table.add_row(
            outside(c.name),
            outside(c.type),
            "yes" if c.required else "",
            "yes" if c.unique else "",
            str(c.min) if c.HasField("min") else "",
            str(c.max) if c.HasField("max") else "",
            outside(", ".join(c.categories)),
        )
    console.print(table)
    console.print(
        f"{outside(reply.dataset)}: {outside(reply.origin)}, "
        f"schema hash {outside(reply.schema_hash[:12])}"
    )


def quality(dataset: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """A dataset's quality report: accepted/rejected rows, reasons, flagged batches."""
    request = validation_pb2.GetQualityReportRequest(dataset=dataset)
    report = _call(data_dir, "GetQualityReport", request)
    if as_json:
        console.print_json(json.dumps(as_dict(report, with_defaults=False)))
        return
    console.print(
        f"[bold]{outside(report.dataset)}[/bold]: manifest v{report.manifest_version}, "
        f"{report.curated_rows:,} rows curated, {report.manifest_rows_rejected:,} rejected "
        f"(durable); since validation started: {report.rows_accepted:,} accepted, "
        f"{report.rows_rejected:,} rejected in {report.batches:,} batches"
    )
    if report.rejection_reasons:
        console.print(outside(json.dumps(dict(report.rejection_reasons), indent=2)))
    if report.flags:
        table = Table("batch", "column", "check", "detail", title="flagged batches")
        for f in report.flags:
            table.add_row(*(outside(v) for v in (f.batch_id, f.column, f.check, f.detail)))
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(datasets)
    app.command()(schema)
    app.command()(quality)
