"""Settings of the ingestion service (env prefix DRIFTLOOP_INGESTION_).

Built once in main.py and passed down.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.ingestion.core import MAX_BATCH_ROWS
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
    max_in_flight_batches: int = Field(default=16, ge=1, le=1000)
    """Most record batches of one IngestStream call handed to the producer but not yet
    acknowledged by the broker; past that the stream stops reading (backpressure to the client)."""
