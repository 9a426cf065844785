"""Settings of the ingestion service (env prefix DRIFTLOOP_INGESTION_).

Built once in main.py and passed down.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.ingestion.core.batches import (
    MAX_BATCH_ROWS,
    MAX_COLUMNS,
    MAX_ROWS_PER_REQUEST,
    Limits,
)
from driftloop.services.ingestion.core.labels import MAX_LABELS_PER_REQUEST
from driftloop.services.ingestion.core.windows import DEFAULT_LINGER_S, DEFAULT_WINDOW_OFFSETS
from driftloop.shared.settings import ServiceSettings


class IngestionSettings(ServiceSettings):
    """What ingestion reads besides CommonSettings."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_INGESTION_", env_nested_delimiter="__", extra="forbid"
    )

    batch_rows: int = Field(default=MAX_BATCH_ROWS, ge=1, le=MAX_BATCH_ROWS)
    """Most rows per record batch published to driftloop.records.raw (at most 5000)."""
    json_topic: bool = True
    """Consume the public JSON topic driftloop.ingest.json."""
    json_window_offsets: int = Field(default=DEFAULT_WINDOW_OFFSETS, ge=1, le=1_000_000)
    """Messages of the public JSON topics are coalesced into batches per dataset (per model for
    labels) within windows of this many offsets of a partition; a batch is also cut at
    batch_rows rows and after json_linger_ms, so batch ids do not depend on poll boundaries."""
    json_linger_ms: int = Field(default=round(DEFAULT_LINGER_S * 1000), ge=0, le=60_000)
    """How long a message of a public JSON topic waits for more to share its batch before the
    partition's held rows are published anyway (so a quiet stream is not delayed); while the
    consumer is behind on the partition the window's end cuts it instead (up to 10 lingers)."""
    max_in_flight_batches: int = Field(default=16, ge=1, le=1000)
    """Most record batches of one IngestStream call handed to the producer but not yet
    acknowledged by the broker; past that the stream stops reading (backpressure to the client)."""
    max_rows_per_request: int = Field(default=MAX_ROWS_PER_REQUEST, ge=1)
    """Most rows one Ingest request, one IngestStream message or one JSON-topic message may
    hold; larger ones are refused with RESOURCE_EXHAUSTED (JSON-topic messages: dead-lettered)."""
    max_columns: int = Field(default=MAX_COLUMNS, ge=1)
    """Most columns one request or JSON-topic message may hold; wider ones are refused like
    over-long ones."""

    labels_json_topic: bool = True
    """Consume the public JSON topic driftloop.labels.json (one {"model", "request_id",
    "label"} object per message) and publish its labels to driftloop.labels."""
    max_labels_per_request: int = Field(default=MAX_LABELS_PER_REQUEST, ge=1)
    """Most labels one IngestLabels request may hold; more are refused with RESOURCE_EXHAUSTED.
    Labels travel on driftloop.labels in LabelBatch events of at most 5000."""

    def limits(self) -> Limits:
        return Limits(max_rows=self.max_rows_per_request, max_columns=self.max_columns)
