"""Helpers for the infra tests: load the compose file, render kustomizations, read PromQL.

No Docker engine or kustomize binary is needed: `render` applies a kustomization's resources,
namespace, labels, images and strategic-merge patches of maps (the subset infra/k8s uses).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from driftloop.shared.cli.commands.config import settings_classes

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
K8S = ROOT / "infra" / "k8s"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "driftloop.json"
PROMETHEUS = ROOT / "infra" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "infra" / "grafana" / "provisioning"

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def setting_env_names() -> set[str]:
    """Every environment variable a settings class reads (nested fields joined with `__`)."""
    names: set[str] = set()
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field, info in cls.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                names |= {f"{prefix}{field}__{child}".upper() for child in sub.model_fields}
            else:
                names.add(f"{prefix}{field}".upper())
    return names


# ---- kustomize (the subset used here)


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build directory` prints, for infra/k8s's kustomizations."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else load_all(path)
    for patch in kustomization.get("patches", []):
        for change in load_all(directory / patch["path"]):
            _apply_patch(docs, change)
    for label in kustomization.get("labels", []):
        for doc in docs:
            _label(doc, label)
    for image in kustomization.get("images", []):
        for container in _containers(docs):
            if container["image"].split(":")[0] == image["name"]:
                name = image.get("newName", image["name"])
                container["image"] = f"{name}:{image['newTag']}"
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs


def _apply_patch(docs: list[dict[str, Any]], change: dict[str, Any]) -> None:
    key = (change["kind"], change["metadata"]["name"])
    targets = [d for d in docs if (d["kind"], d["metadata"]["name"]) == key]
    if len(targets) != 1:
        raise AssertionError(f"patch {key} matches {len(targets)} objects")
    _merge(targets[0], change)


def _merge(into: dict[str, Any], change: dict[str, Any]) -> None:
    for name, value in change.items():
        if isinstance(value, list):
            raise AssertionError("list patches need kustomize's strategic merge; keep to maps")
        if isinstance(value, dict) and isinstance(into.get(name), dict):
            _merge(into[name], value)
        else:
            into[name] = copy.deepcopy(value)


def _label(doc: dict[str, Any], label: dict[str, Any]) -> None:
    doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    template = doc.get("spec", {}).get("template")
    if label.get("includeTemplates") and template is not None:
        template.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    if label.get("includeSelectors"):
        raise AssertionError("selector labels are not rendered here")


def _containers(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        found += spec.get("containers", []) + spec.get("initContainers", [])
    return found


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# ---- PromQL

# Aggregations, functions and keywords that look like identifiers.
PROMQL_WORDS = set(
    """
    sum min max avg count stddev stdvar topk bottomk quantile count_values group by without on
    ignoring group_left group_right and or unless bool offset rate irate increase delta idelta
    deriv histogram_quantile sum_over_time avg_over_time max_over_time min_over_time
    last_over_time count_over_time abs ceil floor round clamp_min clamp_max label_replace
    label_join vector scalar time timestamp absent changes resets sort sort_desc inf nan
""".split()
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (labels, grouping clauses and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or word.startswith("$"):
            continue
        if text[match.end() :].lstrip().startswith("("):
            raise AssertionError(f"unknown PromQL function {word!r} in {expr!r}")
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [t["expr"] for t in inner.get("targets", []) if t.get("expr")]
    return exprs


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


# Samples Prometheus itself adds to every scrape target, not exported by driftloop.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def sample_names(families: Iterable[Any]) -> set[str]:
    """Every series name the families expose (e.g. x_total, x_bucket, x_sum, x_count)."""
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        elif family.type == "summary":
            names |= {f"{family.name}_{s}" for s in ("sum", "count")}
        names |= {s.name for s in family.samples}
    return names
