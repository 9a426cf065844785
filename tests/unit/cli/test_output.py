"""Every `--json` of the CLI: snake_case keys and real numbers, through one converter."""

from __future__ import annotations

import json

import pytest

from driftloop.protos.validation.v1 import validation_pb2
from driftloop.shared.cli.output import as_dict

pytestmark = pytest.mark.unit


def test_int64_fields_are_numbers_and_keys_keep_their_proto_names() -> None:
    reply = validation_pb2.ListDatasetsResponse()
    reply.datasets.add(dataset="people", manifest_version=3, curated_rows=3000)
    data = as_dict(reply)
    assert data == {
        "datasets": [{"dataset": "people", "manifest_version": 3, "curated_rows": 3000}]
    }
    assert '"curated_rows": 3000' in json.dumps(data)


def test_maps_and_nested_messages_are_converted_too() -> None:
    report = validation_pb2.QualityReport(dataset="people", rows_accepted=2**40)
    report.rejection_reasons["age out of range"] = 12
    report.flags.add(batch_id="b1", column="age", check="null_spike", detail="x")
    data = as_dict(report)
    assert data["rows_accepted"] == 2**40
    assert data["rejection_reasons"] == {"age out of range": 12}
    assert data["flags"][0]["batch_id"] == "b1"
    assert not any(k != k.lower() for k in data), "no camelCase key"
