"""protobuf Timestamps <-> Unix seconds, for every pb conversion module (one place, so that an
unset timestamp means the same thing everywhere: None, never 1970)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(seconds: float) -> Timestamp:
    """A Timestamp of `seconds` since the epoch (nanosecond resolution)."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def optional_timestamp(seconds: float | None) -> Timestamp | None:
    """None stays None (proto3 leaves the field unset)."""
    return None if seconds is None else timestamp(seconds)


def seconds(ts: Timestamp) -> float:
    """Seconds since the epoch; an unset Timestamp reads as 0.0."""
    return ts.ToNanoseconds() / 1e9


def seconds_or_none(ts: Timestamp) -> float | None:
    """Seconds since the epoch, or None for an unset (zero) Timestamp."""
    nanos = ts.ToNanoseconds()
    return nanos / 1e9 if nanos else None
