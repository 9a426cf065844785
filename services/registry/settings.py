"""Settings of the registry service (env prefix DRIFTLOOP_REGISTRY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.shared.fleet import DEFAULT_MAX_PARTITIONS
from driftloop.shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """How the registry stores its metadata and publishes its events."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_REGISTRY_", env_nested_delimiter="__", extra="forbid"
    )

    db_path: Path | None = None
    """SQLite database file; unset means <data_dir>/registry.db."""
    outbox_poll_seconds: float = 0.5
    """How often the outbox publisher looks for unsent events besides being woken on commit."""
    outbox_retry_seconds: float = 1.0
    """Pause before retrying the outbox when the broker is unreachable."""
    max_search_candidates: int = 50
    """Largest hyper-parameter search a training spec may ask for (parameter combinations
    tried); larger grids are refused unless search.max_candidates samples them down."""
    max_partitions: int = Field(default=DEFAULT_MAX_PARTITIONS, ge=1)
    """Partition models one fleet may have: a registration that would create one more is
    refused (training refuses a partition_by column with more values before it fits)."""

    def database(self, data_dir: Path) -> Path:
        return self.db_path if self.db_path is not None else data_dir / "registry.db"
