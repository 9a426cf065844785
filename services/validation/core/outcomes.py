"""What validating one poll of raw batches yields for the bus, as plain data: curated files (claim
checks), each batch's rejected rows with their reasons, and the dataset's new version."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CuratedBatch:
    """A raw batch whose accepted rows a curated file holds."""

    batch_id: str
    rows: int
    """Its accepted rows in the file (0 when not known: files curated before counts were kept)."""
    source: str
    """How its rows arrived; empty when the file is sent again for another batch of it."""


@dataclass(frozen=True)
class CuratedRows:
    """One curated Parquet file as a claim check: where it is stored and what it holds, so a
    reader fetches and verifies it; the bytes themselves only when inline is asked for."""

    dataset: str
    manifest_version: int
    file_key: str
    sha256: str
    row_count: int
    byte_size: int
    """Size of the stored file."""
    parquet: bytes
    """The file's bytes when sent inline; empty by default, and when the file is larger than
    the inline limit (read it by file_key)."""
    batches: tuple[CuratedBatch, ...]
    schema_hash: str
    cause: int
    """Position in the poll of the raw batch whose event caused this one."""


@dataclass(frozen=True)
class RejectedRow:
    row_index: int
    reason: str
    row_json: str


@dataclass(frozen=True)
class RejectedRows:
    dataset: str
    batch_id: str
    rows: tuple[RejectedRow, ...]
    cause: int


@dataclass(frozen=True)
class DatasetVersioned:
    dataset: str
    manifest_version: int
    total_rows: int
    manifest_key: str
    cause: int


@dataclass(frozen=True)
class BatchOutcome:
    """How one raw batch fared: its row counts, and its rejected rows if it has any."""

    dataset: str
    accepted_rows: int
    rejected_rows: int
    rejected: RejectedRows | None


@dataclass(frozen=True)
class RunOutcome:
    """A run of consecutive batches of one dataset and schema, curated together; published in
    this order: files, then each batch's rejected rows, then the version."""

    files: tuple[CuratedRows, ...]
    batches: tuple[BatchOutcome, ...]
    version: DatasetVersioned | None
    """None when no version was written or no batch of the run had an accepted row."""
