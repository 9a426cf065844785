"""`driftloop up --scale SERVICE=N[,SERVICE=N]` and DRIFTLOOP_SCALE: the syntax, the services
refused (registry, training, monitoring) with the reason, the extra instances' ports and
environment, and endpoints.json listing every instance (no processes started here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from driftloop.shared.bus import topics
from driftloop.shared.cli.app import app
from driftloop.shared.cli.stack import embedded as stack
from driftloop.shared.cli.stack import scale
from driftloop.shared.errors import Conflict
from driftloop.shared.settings import SERVICES, CommonSettings, KafkaConnection, parse_scale

pytestmark = pytest.mark.unit


def test_scale_parses_services_and_counts() -> None:
    assert parse_scale("validation=2, ingestion=3") == {"validation": 2, "ingestion": 3}
    assert parse_scale("") == {}
    assert parse_scale("serving=1,") == {"serving": 1}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("validation", "expected SERVICE=N"),
        ("validation=", "expected SERVICE=N"),
        ("=2", "expected SERVICE=N"),
        ("validaton=2", "unknown service 'validaton'"),
        ("validation=0", "from 1 to 32"),
        ("validation=-1", "from 1 to 32"),
        ("validation=two", "from 1 to 32"),
        ("validation=33", "from 1 to 32"),
        ("validation=2,validation=3", "validation is named twice"),
    ],
)
def test_bad_scale_is_refused_saying_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_scale(text)


def test_the_setting_takes_the_same_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_SCALE", "validation=2,ingestion=2")
    assert CommonSettings().scale == {"validation": 2, "ingestion": 2}
    monkeypatch.setenv("DRIFTLOOP_SCALE", "validation=2,bogus=1")
    with pytest.raises(ValidationError, match="unknown service 'bogus'"):
        CommonSettings()
    with pytest.raises(ValidationError, match="from 1 to 32"):
        CommonSettings(scale={"validation": 0})


@pytest.mark.parametrize(
    ("service", "why"),
    [
        ("registry", "one writer of its SQLite database"),
        ("training", "requeues every running run"),
        ("monitoring", "live drift windows and detector state"),
    ],
)
def test_services_that_cannot_run_twice_are_refused_by_name(service: str, why: str) -> None:
    with pytest.raises(Conflict, match=f"cannot scale {service} to 2: .*{why}"):
        scale.check_scale({"validation": 2, service: 2})
    scale.check_scale({service: 1, "validation": 2, "ingestion": 3, "serving": 4})


def test_up_refuses_before_starting_anything(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = tmp_path / "data"
    result = runner.invoke(app, ["up", "--data-dir", str(data_dir), "--scale", "monitoring=2"])
    assert result.exit_code == 1
    assert "cannot scale monitoring to 2" in result.output
    result = runner.invoke(app, ["up", "--data-dir", str(data_dir), "--scale", "nope=2"])
    assert result.exit_code == 2 and "unknown service 'nope'" in result.output
    assert not data_dir.exists(), "nothing started, nothing written"


def _common(tmp_path: Path, **scaled: int) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path, scale=scaled, kafka_bootstrap="127.0.0.1:1")


def _ports() -> Any:
    taken = iter(range(20000, 20100))
    return lambda: next(taken)


def test_extra_instances_get_their_own_ports_and_share_a_consumer_group(tmp_path: Path) -> None:
    common = _common(tmp_path, validation=3, ingestion=2, serving=4)
    plan = scale.plan(common, _ports())
    names = [i.name for i in plan]
    assert names == [
        "ingestion",
        "ingestion-2",
        "validation",
        "validation-2",
        "validation-3",
        "training",
        "registry",
        "serving",
        "monitoring",
    ], "serving scales as workers of one process"
    first = plan[2]
    assert (first.grpc_port, first.metrics_port) == (
        common.ports.validation,
        common.ports.metrics_validation,
    )
    ports = [p for i in plan for p in (i.grpc_port, i.metrics_port)]
    assert len(set(ports)) == len(ports), "no two instances share a port"

    env = {i.name: scale.instance_env(common, i) for i in plan}
    assert env["validation"] == {"DRIFTLOOP_CONSUMER_GROUP_MEMBERSHIP": "true"}
    assert env["validation-3"] == {
        "DRIFTLOOP_CONSUMER_GROUP_MEMBERSHIP": "true",
        "DRIFTLOOP_PORTS__VALIDATION": str(plan[4].grpc_port),
        "DRIFTLOOP_PORTS__METRICS_VALIDATION": str(plan[4].metrics_port),
    }
    assert env["serving"] == {"DRIFTLOOP_SERVING_WORKERS": "4"}
    assert env["training"] == env["registry"] == env["monitoring"] == {}

    specs = {s.name: s for s in stack.build_specs(common, None, plan)}
    assert list(specs) == names, "no broker process on an external Kafka"
    assert specs["validation-2"].argv[-1] == "driftloop.services.validation"
    assert specs["validation-2"].log_path.name == "validation-2.log"
    assert specs["validation-2"].env["DRIFTLOOP_DATA_DIR"] == str(tmp_path.resolve())


def test_an_unscaled_stack_runs_one_process_per_service_as_before(tmp_path: Path) -> None:
    common = _common(tmp_path)
    plan = scale.plan(common, _ports())
    assert [i.name for i in plan] == list(SERVICES)
    assert all(scale.instance_env(common, i) == {} for i in plan), "manual assignment kept"


class _Pids:
    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids

    def pids(self) -> dict[str, int | None]:
        return dict(self._pids)


def test_endpoints_list_every_instance_and_down_finds_them(tmp_path: Path) -> None:
    common = _common(tmp_path, validation=2, serving=3)
    plan = scale.plan(common, _ports())
    pids = {i.name: 1000 + n for n, i in enumerate(plan)}
    found = stack._endpoints(common, _Pids(pids), plan)  # type: ignore[arg-type]
    validation = found["services"]["validation"]
    assert validation["grpc"] == f"127.0.0.1:{common.ports.validation}"
    assert [i["name"] for i in validation["instances"]] == ["validation", "validation-2"]
    assert validation["instances"][1]["grpc"] == f"127.0.0.1:{plan[2].grpc_port}"
    assert validation["instances"][1]["pid"] == pids["validation-2"]
    assert found["services"]["serving"]["workers"] == 3
    assert "workers" not in found["services"]["validation"]
    assert set(stack.recorded_pids(found)) == {"up", *pids}, "`down` stops every instance"

    stack.endpoints_path(common).write_text(json.dumps(found))
    listed = stack.instance_addresses(common)
    assert listed["validation-2"] == ("validation", f"127.0.0.1:{plan[2].grpc_port}")
    assert set(listed) == set(pids), "health is waited on for every instance"


def test_without_endpoints_each_service_is_one_instance_at_its_address(tmp_path: Path) -> None:
    common = _common(tmp_path)
    assert stack.instance_addresses(common) == {s: (s, common.address(s)) for s in SERVICES}


def test_the_partitions_setting_sizes_only_the_keyed_topics() -> None:
    assert topics.planned() == topics.PARTITIONS
    four = topics.planned(KafkaConnection(bootstrap="x:1", partitions=4))
    assert four[topics.RECORDS_RAW] == four[topics.INGEST_JSON] == 4
    assert four[topics.DRIFT] == four[topics.MODELS] == four[topics.DEADLETTER] == 1
    assert set(four) == set(topics.PARTITIONS)
