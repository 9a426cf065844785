"""docker-compose.yml: valid Compose, real commands and settings, default ports, wiring.

There is no Docker engine here; the file is checked against the Compose Specification schema
(vendored by check-jsonschema) and against driftloop's own settings and entry points.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from typing import Any

import jsonschema
import pytest
from infra_support import (
    COMPOSE,
    GRAFANA_PROVISIONING,
    PROMETHEUS,
    load_dashboard,
    load_yaml,
    setting_env_names,
)

from driftloop.services.ingestion.settings import IngestionSettings
from driftloop.shared.settings import SERVICES, CommonSettings, Ports

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)  # type: ignore[no-any-return]


def driftloop_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: compose["services"][name] for name in SERVICES}


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(compose)


def test_the_schema_check_can_fail(compose: dict[str, Any]) -> None:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["registry"]["restart"] = ["always"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_every_service_runs_its_real_entry_point(compose: dict[str, Any]) -> None:
    for name, service in driftloop_services(compose).items():
        module = f"driftloop.services.{name}"
        assert service["command"] == ["python", "-m", module]
        assert importlib.util.find_spec(f"{module}.__main__") is not None
        assert service["image"] == "driftloop:0.1.0"
        assert service["build"]["dockerfile"] == "infra/Dockerfile"


def test_every_driftloop_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = setting_env_names()
    for name, service in driftloop_services(compose).items():
        env = service["environment"]
        unknown = {k for k in env if k.startswith("DRIFTLOOP_") and k not in known}
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"


def test_the_environment_parses_into_the_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["services"]["registry"]["environment"]
    for key, value in env.items():
        # ${VAR:-default} is compose interpolation: the default is what runs without a .env
        text = str(value)
        if text.startswith("${") and ":-" in text:
            text = text.split(":-", 1)[1].rstrip("}")
        monkeypatch.setenv(key, text)
    common = CommonSettings()
    assert common.object_store == "s3"
    assert common.bootstrap() == "kafka:9092"
    assert common.s3.endpoint.split(":")[0] in compose["services"]
    assert common.token() is None, "no token unless DRIFTLOOP_AUTH_TOKEN is set"
    for name in SERVICES:
        host, port = common.address(name).split(":")
        assert host == name and int(port) == Ports().grpc(name)
    IngestionSettings()  # the service classes accept the same environment


def test_published_ports_are_the_settings_defaults(compose: dict[str, Any]) -> None:
    ports = Ports()
    for name, service in driftloop_services(compose).items():
        published = [p.split(":") for p in service["ports"]]
        assert published == [["127.0.0.1", str(ports.grpc(name)), str(ports.grpc(name))]]
    kafka = compose["services"]["kafka"]
    assert kafka["ports"] == [f"127.0.0.1:{ports.broker}:9094"]
    assert f"HOST://localhost:{ports.broker}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_health_checks_ask_each_services_grpc_health(compose: dict[str, Any]) -> None:
    for name, service in driftloop_services(compose).items():
        assert service["healthcheck"]["test"] == [
            "CMD",
            "python",
            "-m",
            "driftloop.shared.cli.stack.healthcheck",
            name,
        ]
        assert service["restart"] == "unless-stopped"
    for infra in ("kafka", "s3", "prometheus", "grafana"):
        assert compose["services"][infra]["healthcheck"]["test"]


def test_services_wait_for_kafka_and_the_bucket(compose: dict[str, Any]) -> None:
    for name, service in driftloop_services(compose).items():
        deps = service["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["s3-init"]["condition"] == "service_completed_successfully"
        if name in ("training", "serving", "monitoring"):
            assert deps["registry"]["condition"] == "service_healthy", "they call the registry"
    init = compose["services"]["s3-init"]
    assert init["depends_on"] == {"s3": {"condition": "service_healthy"}}
    assert init["restart"] == "no" and init["healthcheck"] == {"disable": True}
    # driftloop's own store creates the bucket, with the services' image and environment
    assert init["image"] == "driftloop:0.1.0" and init["build"]["dockerfile"] == "infra/Dockerfile"
    assert init["environment"] == compose["services"]["registry"]["environment"]
    assert init["command"][:2] == ["python", "-c"]
    code = compile(init["command"][2], "s3-init", "exec")
    assert {"open_object_store", "CommonSettings"} <= set(code.co_names)
    assert "open_object_store(CommonSettings())" in init["command"][2]


def test_s3_is_seaweedfs_with_the_services_keys_on_the_endpoint_they_use(
    compose: dict[str, Any],
) -> None:
    s3 = compose["services"]["s3"]
    env = compose["services"]["registry"]["environment"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")
    command = s3["command"]
    assert command[0] == "mini" and "-dir=/data" in command
    assert "s3-data:/data" in s3["volumes"] and "s3-data" in compose["volumes"]
    # its admin identity is the pair of keys the services sign with
    assert s3["environment"]["AWS_ACCESS_KEY_ID"] == env["DRIFTLOOP_S3__ACCESS_KEY"]
    assert s3["environment"]["AWS_SECRET_ACCESS_KEY"] == env["DRIFTLOOP_S3__SECRET_KEY"]
    host, port = env["DRIFTLOOP_S3__ENDPOINT"].split(":")
    assert host == "s3" and f"-s3.port={port}" in command
    assert f":{port}/healthz" in " ".join(s3["healthcheck"]["test"])
    # published on the settings' default endpoint, so the host CLI needs no S3 configuration
    default_host, default_port = CommonSettings().s3.endpoint.split(":")
    assert s3["ports"] == [f"{default_host}:{default_port}:{port}"]
    # nothing else listens for the outside, and no usage report leaves the machine
    for flag in ("-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"):
        assert flag in command
    assert "-master.telemetry=false" in command


def test_registry_and_training_state_is_on_volumes(compose: dict[str, Any]) -> None:
    for name in ("registry", "training"):
        service = compose["services"][name]
        data_dir = service["environment"]["DRIFTLOOP_DATA_DIR"]
        volume = f"{name}-data"
        assert f"{volume}:{data_dir}" in service["volumes"]
        assert volume in compose["volumes"]


def test_prometheus_scrapes_every_metrics_port() -> None:
    config = load_yaml(PROMETHEUS)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "driftloop")
    targets = {g["labels"]["service"]: g["targets"] for g in job["static_configs"]}
    assert targets == {name: [f"{name}:{Ports().metrics(name)}"] for name in SERVICES}


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses(
    compose: dict[str, Any],
) -> None:
    sources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert sources[0]["url"] == "http://prometheus:9090"
    uids = {
        panel["datasource"]["uid"] for panel in load_dashboard()["panels"] if panel["type"] != "row"
    }
    assert uids == {sources[0]["uid"]}
    provider = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "driftloop.yml")["providers"][0]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./infra/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
