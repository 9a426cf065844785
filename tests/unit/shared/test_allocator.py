"""Ingestion's allocator tuning applies on glibc and is harmless to call again."""

from __future__ import annotations

import platform

import pytest

from driftloop.shared.allocator import keep_freed_buffers

pytestmark = pytest.mark.unit


def test_thresholds_are_raised_on_glibc_and_calls_are_idempotent() -> None:
    first = keep_freed_buffers()
    assert keep_freed_buffers() == first
    if platform.libc_ver()[0] == "glibc":
        assert first, "mallopt accepted both thresholds"
