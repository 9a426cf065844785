"""Settings of the validation service (env prefix DRIFTLOOP_VALIDATION_).

Built once in main.py and passed down.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop.shared.settings import ServiceSettings


class ValidationSettings(ServiceSettings):
    """What validation reads besides CommonSettings."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLOOP_VALIDATION_", env_nested_delimiter="__", extra="forbid"
    )

    schema_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a dataset schema read from the object store is reused before it is read again
    (a schema declared through another validation replica shows up within this time)."""
