"""The Grafana dashboard queries only metric names the services export.

Importing every service's main module defines all of its metrics in prometheus_client's
registry; tests/integration/infra/test_infra_stack.py checks the same against live scrapes.
"""

from __future__ import annotations

import importlib
import re

import pytest
from infra_support import (
    PROMETHEUS_SYNTHETIC,
    dashboard_exprs,
    load_dashboard,
    promql_metric_names,
    sample_names,
)
from prometheus_client import REGISTRY

from driftloop.shared.settings import SERVICES

pytestmark = pytest.mark.unit


def exported() -> set[str]:
    for name in SERVICES:
        importlib.import_module(f"driftloop.services.{name}.main")
    return sample_names(REGISTRY.collect())


def test_promql_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(a_seconds_bucket{service="s", '
        'method=~".*/X"}[$__rate_interval]))) / ignoring(x) b_total offset 5m'
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        promql_metric_names("made_up(x_total)")


def test_every_dashboard_metric_is_exported() -> None:
    names = exported()
    queried = set().union(*(promql_metric_names(e) for e in dashboard_exprs(load_dashboard())))
    assert queried, "the dashboard has queries"
    missing = queried - names - PROMETHEUS_SYNTHETIC
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"


def test_the_issue_s_metrics_are_on_the_dashboard() -> None:
    queried = set().union(*(promql_metric_names(e) for e in dashboard_exprs(load_dashboard())))
    for needed in (
        "driftloop_grpc_request_seconds_bucket",  # request latencies per RPC
        "driftloop_grpc_requests_total",  # request counts per RPC
        "driftloop_consumer_lag_messages",
        "driftloop_events_handled_total",
        "driftloop_events_deadlettered_total",
        "driftloop_monitoring_drift_statistic",
        "driftloop_training_run_seconds_sum",
        "driftloop_serving_model_version",
        "driftloop_serving_swaps_total",
        "driftloop_serving_deploy_failures_total",
        "driftloop_loop_stage_seconds_bucket",
    ):
        assert needed in queried, needed


def test_driftloop_metric_names_follow_prometheus_conventions() -> None:
    exported()
    for family in REGISTRY.collect():
        if not family.name.startswith("driftloop_"):
            continue
        assert re.fullmatch(r"driftloop_[a-z0-9_]+", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_rows", "_bytes")), family.name
        assert not family.name.endswith("_total") or family.type == "counter", family.name
