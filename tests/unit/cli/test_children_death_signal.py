"""When a launcher arms the parent-death signal: on Linux, from the main thread only (the kernel
ties it to the forking thread), and never where prctl does not exist. (That an armed child does
die with its parent: tests/integration/cli/test_children_die_with_parent.py.)"""

from __future__ import annotations

import sys
import threading

import pytest

from driftloop.shared.cli import children

pytestmark = pytest.mark.unit

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


@linux_only
def test_armed_from_the_main_thread() -> None:
    assert callable(children.die_with_parent())


@linux_only
def test_not_armed_from_a_worker_thread() -> None:
    """A child forked by a worker thread would get the signal when that thread ends, the parent
    still running: so no preexec_fn there (the child goes unprotected instead)."""
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(children.die_with_parent()))
    worker.start()
    worker.join(30)
    assert found == [None]


def test_no_prctl_outside_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert children._libc_prctl() is None
