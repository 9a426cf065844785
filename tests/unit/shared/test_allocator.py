"""Allocator controls: ingestion's tuning applies on glibc and is harmless to call again; the C
library is looked up once per process."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from driftloop.shared import allocator
from driftloop.shared.allocator import keep_freed_buffers

pytestmark = pytest.mark.unit


def test_thresholds_are_raised_on_glibc_and_calls_are_idempotent() -> None:
    first = keep_freed_buffers()
    assert keep_freed_buffers() == first
    if platform.libc_ver()[0] == "glibc":
        assert first, "mallopt accepted both thresholds"


def test_the_c_library_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # find_library runs `ldconfig -p` in a subprocess: once per refused large request cost a
    # fork of the whole serving process each time (#21)
    looked_up: list[str] = []
    real = ctypes.util.find_library

    def counting(name: str) -> str | None:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(ctypes.util, "find_library", counting)
    allocator._libc.cache_clear()
    try:
        for _ in range(5):
            allocator.give_back_freed_memory()
        allocator.keep_freed_buffers()
    finally:
        allocator._libc.cache_clear()
    assert looked_up == ["c"]
