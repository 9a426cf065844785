"""`driftloop bench ...`: benchmarks that print a table (or --json), never timed tests.

Each benchmark lives in its own module `driftloop.shared.cli.bench.<name>` defining a typer
command function named `command`; it is registered here as `driftloop bench <name>`.
"""

from __future__ import annotations

import importlib

import typer

BENCHMARKS = ("serving", "drift", "ingest", "loop", "chaos", "recovery", "fleet", "changelog")

bench_app = typer.Typer(
    help="Benchmarks: each prints a table, or one JSON object with --json.", no_args_is_help=True
)


def register() -> typer.Typer:
    for name in BENCHMARKS:
        module_name = f"driftloop.shared.cli.bench.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a real import error inside the benchmark must surface
            continue
        bench_app.command(name)(module.command)
    return bench_app
