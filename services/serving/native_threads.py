"""OpenMP threads of the serving process: one per calling thread unless the operator says.

Why: scikit-learn's histogram gradient boosting predicts each tree over an OpenMP team as wide
as the machine. On a request of a few rows the team's start and barrier cost more than the
trees, and on a machine whose cores are busy (serving's own event loop, other services) a team
member waiting for a core stalls the whole prediction: measured on 2 shared cores, one-row
predict p99 330-390 ms with the default 2 threads, 1.3 ms with 1 (median 0.7 ms either way).
ONNX Runtime's sessions are held to one thread for the same reason (core/compiled_form.py).

OMP_NUM_THREADS is read once, when the OpenMP runtime loads (threadpoolctl's limit applies to
the calling thread only, and serving loads models in worker threads), so it is set before
anything imports scikit-learn: by `python -m driftloop.services.serving` (__main__.py).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

THREADS = "1"


def limit(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set OMP_NUM_THREADS to THREADS unless it is set already; return its value."""
    return environ.setdefault("OMP_NUM_THREADS", THREADS)
