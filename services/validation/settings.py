"""Settings of the validation service (env prefix DRIFTLOOP_VALIDATION_).

Built once in main.py and passed down.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.services.validation.core.keys import DEFAULT_MAX_KEYS
from driftloop.shared.settings import ServiceSettings

MAX_INLINE_BYTES = 16 * 1024 * 1024 - (64 << 10)
"""The largest curated file that may travel inline: the bus's largest message (16 MiB,
driftloop.shared.bus.topics.MAX_MESSAGE_BYTES, not imported here: it would load the Kafka
client into `driftloop config`) less room for the envelope and the batch list."""


class ValidationSettings(ServiceSettings):
    """What validation reads besides CommonSettings."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_VALIDATION_", env_nested_delimiter="__", extra="forbid"
    )

    schema_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a dataset schema read from the object store is reused before it is read again
    (a schema declared through another validation replica shows up within this time)."""
    poll_batches: int = Field(default=32, ge=1, le=1000)
    """Most raw record batches taken from the bus in one poll; the accepted rows of one poll's
    batches of a dataset are curated as one Parquet file and one manifest version (so this
    bounds both validation's memory and the size of a curated file)."""
    polls_in_flight: int = Field(default=2, ge=1, le=16)
    """Polls handled at once: one being checked while the ones before it are curated and
    published (in order; offsets are committed only after). Memory is bounded by
    polls_in_flight x poll_batches record batches. 3 measured no faster than 2 on 2 cores."""
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=5000)
    """How long the broker may hold a fetch of driftloop.records.raw waiting for more data
    (the embedded broker tends to hold fetches at the tail for this long even when data
    arrived, so a short wait keeps validation close behind ingestion)."""
    unique_max_keys: int = Field(default=DEFAULT_MAX_KEYS, ge=1000)
    """Keys remembered per unique column of a dataset (12 bytes each), rebuilt from the curated
    data on start; past it the oldest are forgotten in blocks (at least the newest half are
    always checked), so memory stays bounded."""
    validated_inline_max_bytes: int = Field(default=0, ge=0, le=MAX_INLINE_BYTES)
    """Curated files of at most this many bytes also carry their Parquet bytes on
    driftloop.records.validated. 0 (the default): every CuratedRows event is a claim check only
    (object key, rows, byte size, SHA-256, schema hash, manifest version) that consumers resolve
    in the object store, so the topic's messages stay a few hundred bytes. Opt in only for
    consumers that want the rows on the bus, and keep it below the topic's max.message.bytes
    less 64 KiB (at most 16 MiB less 64 KiB); larger files still go by reference."""
