"""Prometheus metrics of the registry: its decisions by model and action.

The core counts a decision once its transaction committed (a rolled-back decision never counts).
"""

from __future__ import annotations

from prometheus_client import Counter

DECISIONS = Counter(
    "driftloop_registry_decisions_total",
    "Registry decisions: promoted, rejected, pending_approval, approved, rolled_back",
    ["model", "action"],
)


def record_decision(model: str, action: str) -> None:
    DECISIONS.labels(model, action).inc()
