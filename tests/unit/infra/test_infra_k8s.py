"""infra/k8s: rendered kustomizations validate against the Kubernetes schemas and match settings.

Rendered by tests/infra_support.render (no kustomize binary here); when a `kustomize` binary is
on PATH its output is compared too.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra_support import COMPOSE, K8S, by_kind, load_yaml, render, setting_env_names

from driftloop.shared.settings import SERVICES, CommonSettings, Ports

pytestmark = pytest.mark.unit

OVERLAYS = ["base", "overlays/in-cluster", "overlays/external"]
K8S_VERSIONS = ["1.30", "1.34"]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(K8S / request.param)


def container(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    pod = by_kind(docs, "Deployment")[service]["spec"]["template"]["spec"]
    return pod["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    for doc in rendered:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_can_fail() -> None:
    deployment = by_kind(render(K8S / "base"), "Deployment")["registry"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"] = {
        "port": "grpc"  # gRPC probes take a number, not a port name
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_every_service_runs_its_entry_point_on_the_default_ports(
    rendered: list[dict[str, Any]],
) -> None:
    ports = Ports()
    services = by_kind(rendered, "Service")
    for name in SERVICES:
        box = container(rendered, name)
        assert box["command"] == ["python", "-m", f"driftloop.services.{name}"]
        assert importlib.util.find_spec(f"driftloop.services.{name}.__main__") is not None
        declared = {p["name"]: p["containerPort"] for p in box["ports"]}
        assert declared == {"grpc": ports.grpc(name), "metrics": ports.metrics(name)}
        exposed = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert exposed == declared
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert box[probe]["grpc"] == {"port": ports.grpc(name)}, (name, probe)
        template = by_kind(rendered, "Deployment")[name]["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports.metrics(name))
        assert box["resources"]["requests"] and box["resources"]["limits"]


def test_every_driftloop_variable_is_a_real_setting(rendered: list[dict[str, Any]]) -> None:
    known = setting_env_names()
    config = by_kind(rendered, "ConfigMap")["driftloop-config"]["data"]
    assert not {k for k in config if k not in known}
    for name in SERVICES:
        env = {e["name"] for e in container(rendered, name).get("env", [])}
        assert not {k for k in env if k.startswith("DRIFTLOOP_") and k not in known}


def test_the_config_parses_into_the_settings(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in by_kind(rendered, "ConfigMap")["driftloop-config"]["data"].items():
        monkeypatch.setenv(key, value)
    common = CommonSettings()
    services = by_kind(rendered, "Service")
    for name in SERVICES:
        host, port = common.address(name).split(":")
        assert host in services and int(port) == Ports().grpc(name)
    assert common.object_store == "s3"


def test_token_secret_is_mounted_where_the_setting_points(
    rendered: list[dict[str, Any]],
) -> None:
    secrets = by_kind(rendered, "Secret")
    for name in SERVICES:
        box = container(rendered, name)
        env = {e["name"]: e for e in box["env"]}
        token_file = env["DRIFTLOOP_AUTH_TOKEN_FILE"]["value"]
        pod = by_kind(rendered, "Deployment")[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mount = next(m for m in box["volumeMounts"] if token_file.startswith(m["mountPath"]))
        secret = volumes[mount["name"]]["secret"]["secretName"]
        assert token_file.rsplit("/", 1)[1] in secrets[secret]["stringData"]
        for ref in ("DRIFTLOOP_S3__ACCESS_KEY", "DRIFTLOOP_S3__SECRET_KEY"):
            key = env[ref]["valueFrom"]["secretKeyRef"]
            assert key["key"] in secrets[key["name"]]["stringData"]


def test_registry_and_training_keep_state_on_a_claim(rendered: list[dict[str, Any]]) -> None:
    claims = by_kind(rendered, "PersistentVolumeClaim")
    data_dir = by_kind(rendered, "ConfigMap")["driftloop-config"]["data"]["DRIFTLOOP_DATA_DIR"]
    for name in ("registry", "training"):
        deployment = by_kind(rendered, "Deployment")[name]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mount = next(
            m for m in container(rendered, name)["volumeMounts"] if m["mountPath"] == data_dir
        )
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in claims


def test_serving_has_a_disruption_budget_and_an_autoscaler(
    rendered: list[dict[str, Any]],
) -> None:
    pdb = by_kind(rendered, "PodDisruptionBudget")["serving"]
    labels = by_kind(rendered, "Deployment")["serving"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["serving"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "serving",
    }
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]


def test_overlays_point_at_their_kafka_and_s3() -> None:
    local = render(K8S / "overlays/in-cluster")
    config = by_kind(local, "ConfigMap")["driftloop-config"]["data"]
    services = by_kind(local, "Service")
    assert config["DRIFTLOOP_KAFKA_BOOTSTRAP"].split(":")[0] in services
    host, port = config["DRIFTLOOP_S3__ENDPOINT"].split(":")
    assert [p["port"] for p in services[host]["spec"]["ports"]] == [int(port)]

    external = render(K8S / "overlays/external")
    config = by_kind(external, "ConfigMap")["driftloop-config"]["data"]
    assert not {"kafka", "s3"} & set(by_kind(external, "Service"))
    assert config["DRIFTLOOP_S3__SECURE"] == "true"
    assert "kafka:9092" not in config["DRIFTLOOP_KAFKA_BOOTSTRAP"]
    assert all(
        d["metadata"].get("namespace") == "driftloop" for d in external if d["kind"] != "Namespace"
    )


def test_in_cluster_s3_is_seaweedfs_keyed_by_the_services_secret() -> None:
    local = render(K8S / "overlays/in-cluster")
    config = by_kind(local, "ConfigMap")["driftloop-config"]["data"]
    port = int(config["DRIFTLOOP_S3__ENDPOINT"].split(":")[1])
    pod = by_kind(local, "StatefulSet")["s3"]["spec"]["template"]["spec"]
    box = pod["containers"][0]
    compose_s3 = load_yaml(COMPOSE)["services"]["s3"]
    assert box["image"] == compose_s3["image"] and box["image"].startswith("chrislusf/seaweedfs:")
    assert box["args"] == compose_s3["command"], "the same server as docker-compose.yml's s3"
    assert box["args"][0] == "mini" and f"-s3.port={port}" in box["args"]
    assert {p["name"]: p["containerPort"] for p in box["ports"]} == {"s3": port}
    assert box["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "s3"}
    assert {m["mountPath"] for m in box["volumeMounts"]} == {"/data"}
    # SeaweedFS's admin identity is the key pair every driftloop service signs with
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in box["env"]}
    service_env = {e["name"]: e for e in container(local, "registry")["env"]}
    for aws, ours in (
        ("AWS_ACCESS_KEY_ID", "DRIFTLOOP_S3__ACCESS_KEY"),
        ("AWS_SECRET_ACCESS_KEY", "DRIFTLOOP_S3__SECRET_KEY"),
    ):
        assert env[aws] == service_env[ours]["valueFrom"]["secretKeyRef"]


def test_in_cluster_bucket_job_runs_driftloops_own_store_with_the_services_settings() -> None:
    local = render(K8S / "overlays/in-cluster")
    job = by_kind(local, "Job")["s3-bucket"]
    box = job["spec"]["template"]["spec"]["containers"][0]
    registry = container(local, "registry")
    assert box["image"] == registry["image"]
    assert box["envFrom"] == registry["envFrom"]
    keys = {e["name"] for e in registry["env"] if e["name"].startswith("DRIFTLOOP_S3__")}
    assert keys and [e for e in box["env"] if e["name"] in keys] == [
        e for e in registry["env"] if e["name"] in keys
    ]
    assert box["command"][:2] == ["python", "-c"]
    code = compile(box["command"][2], "s3-bucket", "exec")
    assert {"open_object_store", "CommonSettings"} <= set(code.co_names)
    compose_init = load_yaml(COMPOSE)["services"]["s3-init"]["command"]
    assert box["command"] == compose_init, "the same bucket step as docker-compose.yml"


@pytest.mark.skipif(shutil.which("kustomize") is None, reason="no kustomize binary on PATH")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_matches_kustomize_when_it_is_installed(overlay: str) -> None:
    out = subprocess.run(
        ["kustomize", "build", str(K8S / overlay)], capture_output=True, check=True, text=True
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, render(K8S / overlay)))
    assert by_kind(built, "ConfigMap") == by_kind(render(K8S / overlay), "ConfigMap")
