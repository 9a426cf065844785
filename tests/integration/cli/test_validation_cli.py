"""The dataset CLI against real ingestion and validation processes: declare a schema from YAML
(compatible changes only, unless --breaking), ingest a CSV with a broken line (rejected with a
reason, the rest goes on), then `driftloop datasets` and `driftloop quality` show the result."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from support import start_process, stop_process, wait_until
from typer.testing import CliRunner

from driftloop.shared.bus.topics import ensure_topics
from driftloop.shared.cli.app import app
from driftloop.shared.cli.stack.broker import wait_for_port
from driftloop.shared.manifest import manifest_head
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

SCHEMA = """
columns:
  - {name: age, type: int, required: true, min: 0, max: 150}
  - {name: color, type: string, categories: [red, blue]}
"""


def env_for(common: CommonSettings) -> dict[str, str]:
    env = {
        "DRIFTLOOP_DATA_DIR": str(common.data_dir.resolve()),
        "DRIFTLOOP_KAFKA_BOOTSTRAP": common.bootstrap(),
        "DRIFTLOOP_LOG_JSON": "true",
    }
    for name, value in common.ports.model_dump().items():
        env[f"DRIFTLOOP_PORTS__{name.upper()}"] = str(value)
    return env


def test_schema_yaml_csv_with_broken_line_datasets_and_quality(
    common: CommonSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(common.bootstrap()))
    env = env_for(common)
    procs = []
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    try:
        for service in ("ingestion", "validation"):
            argv = [sys.executable, "-m", f"driftloop.services.{service}"]
            log = str(tmp_path / f"{service}.log")
            procs.append(start_process(argv, env=env, log_path=log))
            wait_for_port("127.0.0.1", common.ports.grpc(service), timeout=60)
        spec = tmp_path / "schema.yaml"
        spec.write_text(SCHEMA)
        code, out = cli("schema", "people", "--declare", str(spec))
        assert code == 0 and "declared" in out and "age" in out
        spec.write_text(SCHEMA.replace("type: int", "type: float"))
        code, out = cli("schema", "people", "--declare", str(spec))
        assert code == 1 and "changes type int -> float" in out
        spec.write_text(SCHEMA + "  - {name: note, type: string}\n")
        code, out = cli("schema", "people", "--declare", str(spec))
        assert code == 0 and "note" in out, "an optional column is a compatible change"

        csv = tmp_path / "people.csv"
        csv.write_text("age,color\n30,red\n40,blue,extra\n200,blue\n50,green\n60,blue\n")
        code, out = cli("ingest", str(csv), "--dataset", "people")
        assert code == 0 and "4 rows accepted" in out
        assert "expected 2 fields, found 3" in out

        store = open_object_store(common)
        wait_until(
            lambda: (h := manifest_head(store, "people")) and h.total_rows + h.rows_rejected == 4,
            60,
            "the CSV's rows accounted",
        )
        code, out = cli("datasets")
        assert code == 0 and "people" in out
        code, out = cli("quality", "people", "--json")
        assert code == 0
        report = json.loads(out)
        assert report["curated_rows"] == 2 and report["manifest_rows_rejected"] == 2
        code, out = cli("quality", "nobody")
        assert code == 1 and "NOT_FOUND" in out
    finally:
        for proc in reversed(procs):
            stop_process(proc)
