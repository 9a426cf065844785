"""The Kafka topics driftloop uses, and how many partitions each is created with.

Keys: records by dataset, predictions and model events by model name, so ordering holds where
it matters (one dataset's batches, one model's promotions).
"""

from __future__ import annotations

INGEST_JSON = "driftloop.ingest.json"
LABELS_JSON = "driftloop.labels.json"
"""Public: any producer writes one JSON object {"model", "request_id", "label"} per message."""
RECORDS_RAW = "driftloop.records.raw"
RECORDS_VALIDATED = "driftloop.records.validated"
RECORDS_REJECTED = "driftloop.records.rejected"
INFERENCE_REQUESTS = "driftloop.inference.requests"
INFERENCE_RESPONSES = "driftloop.inference.responses"
PREDICTIONS = "driftloop.predictions"
LABELS = "driftloop.labels"
DRIFT = "driftloop.drift"
MODELS = "driftloop.models"
DEPLOYMENTS = "driftloop.deployments"
DEADLETTER = "driftloop.deadletter"

PARTITIONS: dict[str, int] = {
    INGEST_JSON: 3,
    LABELS_JSON: 3,
    RECORDS_RAW: 3,
    RECORDS_VALIDATED: 3,
    RECORDS_REJECTED: 1,
    INFERENCE_REQUESTS: 3,
    INFERENCE_RESPONSES: 3,
    PREDICTIONS: 3,
    LABELS: 3,
    DRIFT: 1,
    MODELS: 1,
    DEPLOYMENTS: 1,
    DEADLETTER: 1,
}
