"""Child processes that end with the process that started them, even when it is SIGKILLed.

Every launcher of stack or bench processes passes `preexec_fn=die_with_parent()` to Popen.
Linux only (PR_SET_PDEATHSIG through ctypes); a no-op elsewhere (macOS has no prctl).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGTERM
"""What a child gets when its parent dies: SIGTERM, so that a child which owns processes of
its own (`driftloop up` under a bench) stops them cleanly, and they, armed the same way, follow
should it be killed in turn."""
ORPHANED_EXIT = 128 + DEATH_SIGNAL
"""The exit code of a child whose parent died before the death signal was armed."""


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc symbols to reach (a static build): no-op
        return None


_prctl = _libc_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when this process dies, whatever kills it
    (SIGKILL, the OOM killer); None (no preexec_fn) where that cannot be had.

    why None off the main thread: the kernel sends the signal when the *thread* that forked the
    child ends, not the process, so a child started from a worker thread (asyncio.to_thread, an
    executor) would be killed as soon as that thread finishes. Every launcher in shared/cli
    starts its children from the main thread; one that does not simply goes unprotected.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    return arm_in_child(os.getpid())


def arm_in_child(parent: int) -> Callable[[], None]:
    """The preexec_fn itself, for a child of `parent` (the pid that calls Popen): arm the death
    signal, then exit at once if `parent` already died before it was armed (the child was
    reparented, and the signal will never come).

    It runs between fork and exec, so it only calls prctl, getppid and _exit: nothing that
    takes a lock another thread of the parent may have held when it forked. The arguments are
    built here, in the parent, for the same reason."""
    prctl = _prctl
    option, sig = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(DEATH_SIGNAL)

    def _preexec() -> None:
        if prctl is not None:
            prctl(option, sig)
        if os.getppid() != parent:
            # why _exit, not kill(getpid(), SIGTERM): the child still carries the parent's
            # signal dispositions until exec, and a parent that handles or ignores SIGTERM
            # would leave it running, orphaned
            os._exit(ORPHANED_EXIT)

    return _preexec
