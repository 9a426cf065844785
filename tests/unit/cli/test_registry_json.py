"""`--json` output of the registry commands from the client's records: shaped as protobuf's JSON
mapping printed it before (empty fields left out, maps whole, times as RFC 3339 UTC)."""

from __future__ import annotations

import pytest

from driftloop.shared.cli.commands.registry import json_record, spec_document, versions_report
from driftloop.shared.registry_types import (
    AliasChange,
    History,
    ModelVersion,
    SliceMetrics,
    SpecVersion,
    TrainingSpec,
)

pytestmark = pytest.mark.unit


def test_records_leave_out_empty_fields_but_keep_whole_maps() -> None:
    move = AliasChange("production", "2", "", "better", "policy", 1_800_000_000.5, "promote")
    assert json_record(move) == {
        "alias": "production",
        "version": "2",
        "reason": "better",
        "actor": "policy",
        "at": "2027-01-15T08:00:00.500000Z",
        "action": "promote",
    }
    assert json_record(SliceMetrics("plan", "pro", 0, {"accuracy": 0.0})) == {
        "column": "plan",
        "value": "pro",
        "metrics": {"accuracy": 0.0},
    }


def test_versions_report_and_spec_documents() -> None:
    version = ModelVersion("m", "1", "production", metrics={"accuracy": 0.9}, created_at=None)
    report = versions_report([version], History(aliases=(AliasChange(version="1"),)))
    assert report["versions"][0]["created_at"] == "-"
    assert report["alias_history"] == [{"version": "1"}] and report["shadow_version"] == ""
    spec = SpecVersion("m", 2, TrainingSpec(estimator="random_forest", params={"n": "10"}))
    assert json_record(spec)["spec"] == {"estimator": "random_forest", "params": {"n": "10"}}
    assert spec_document(spec.spec)["params"] == {"n": 10}
