"""Serving's OpenMP threads: one per thread unless the operator set OMP_NUM_THREADS, set by
`python -m driftloop.services.serving` before anything loads the OpenMP runtime, so the threads
that load and warm up models (asyncio.to_thread) are limited too, not only the main one."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.services.serving import native_threads

pytestmark = pytest.mark.unit

MAIN = Path(native_threads.__file__).with_name("__main__.py")


def test_the_limit_is_one_thread_unless_the_operator_chose() -> None:
    environ: dict[str, str] = {}
    assert native_threads.limit(environ) == "1" and environ == {"OMP_NUM_THREADS": "1"}
    chosen = {"OMP_NUM_THREADS": "4"}
    assert native_threads.limit(chosen) == "4" and chosen == {"OMP_NUM_THREADS": "4"}


def test_the_entry_point_limits_threads_before_importing_the_service() -> None:
    order = [ast.unparse(node) for node in ast.parse(MAIN.read_text()).body]
    limit = order.index("native_threads.limit()")
    service = next(i for i, s in enumerate(order) if "serving.main import" in s)
    assert limit < service, order


def test_a_worker_thread_predicts_with_one_openmp_thread() -> None:
    script = (
        "from driftloop.services.serving import native_threads\n"
        "native_threads.limit()\n"
        "import concurrent.futures\n"
        "from sklearn.utils._openmp_helpers import _openmp_effective_n_threads\n"
        "with concurrent.futures.ThreadPoolExecutor(1) as pool:\n"
        "    print(pool.submit(_openmp_effective_n_threads).result())\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
