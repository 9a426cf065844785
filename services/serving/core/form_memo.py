"""What deriving a version's numeric and compiled forms found, remembered for the process's
life, so a partition model evicted and loaded again does not redo it.

Per artifact sha256 (bytes the loader hash-checked, so the same key is the same pipeline and
the same check rows give the same answers): whether the numeric form agreed with the pipeline,
and whether the compiled form could be built and agreed. A reload derives its forms again from
the freshly loaded pipeline (cheap) but skips the checks already made for that version, and
never retries a compilation that failed for it.

Per pipeline shape (the classes of its fitted steps): a shape whose compilation raised for
UNCONVERTIBLE_AFTER different artifacts and never succeeded is not compiled again (skl2onnx
1.20 cannot convert HistGradientBoosting: every attempt spends ~100 ms building its error
message). Why a count and not the first failure: a conversion error may depend on one model's
fitted values; the same error on several different artifacts of a shape does not.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

MAX_VERSIONS = 50_000
"""Artifacts remembered at most (~200 bytes each: ~10 MB when full): two versions of each
partition of a 20,000-partition fleet and more; the least recently used are forgotten first."""
UNCONVERTIBLE_AFTER = 3
"""Different artifacts of one pipeline shape whose compilation raised, with none compiled,
after which that shape is not compiled again in this process."""

Compiled = Literal["agrees", "disagrees", "unconvertible", "untried"]


@dataclass(frozen=True)
class Checked:
    """What the checks found for one artifact."""

    numeric: bool
    """The numeric form agreed with the pipeline on numeric_form's check sample."""
    compiled: Compiled = "untried"
    """What compiled_form.build found (untried: compilation was off or not reached)."""


def shape(pipeline: Any) -> tuple[str, ...]:
    """The qualified classes of a pipeline's fitted steps, in order (steps inside a Pipeline
    or ColumnTransformer included): what a conversion depends on beyond fitted values."""
    from driftloop.services.serving.core.compiled_form import _fitted_steps

    return tuple(f"{type(s).__module__}.{type(s).__qualname__}" for s in _fitted_steps(pipeline))


class FormMemo:
    """Checked per artifact sha256 (bounded, least recently used forgotten first), and the
    pipeline shapes known not to compile. Thread-safe: deploys derive forms in threads."""

    def __init__(self, max_versions: int = MAX_VERSIONS) -> None:
        self._max = max_versions
        self._checked: OrderedDict[str, Checked] = OrderedDict()
        self._failed: dict[tuple[str, ...], set[str]] = {}
        """Shape -> sha256 of artifacts of it whose compilation raised (up to the count)."""
        self._compiled_shapes: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> Checked | None:
        with self._lock:
            found = self._checked.get(sha256)
            if found is not None:
                self._checked.move_to_end(sha256)
            return found

    def put(self, sha256: str, checked: Checked) -> None:
        with self._lock:
            self._checked[sha256] = checked
            self._checked.move_to_end(sha256)
            while len(self._checked) > self._max:
                self._checked.popitem(last=False)

    def compiles(self, kind: tuple[str, ...]) -> bool:
        """Whether a pipeline of this shape may still compile (worth trying)."""
        with self._lock:
            return len(self._failed.get(kind, ())) < UNCONVERTIBLE_AFTER

    def compiled(self, kind: tuple[str, ...], sha256: str, outcome: Compiled) -> None:
        """Record what compiling an artifact of this shape found."""
        with self._lock:
            if outcome == "unconvertible" and kind not in self._compiled_shapes:
                failed = self._failed.setdefault(kind, set())
                if len(failed) < UNCONVERTIBLE_AFTER:
                    failed.add(sha256)
                    if len(failed) == UNCONVERTIBLE_AFTER:
                        log.info(
                            "compiled_form_given_up",
                            shape=kind[-1] if kind else "",
                            artifacts=UNCONVERTIBLE_AFTER,
                        )
            elif outcome in ("agrees", "disagrees"):  # a graph was built: the shape converts
                self._compiled_shapes.add(kind)
                self._failed.pop(kind, None)

    def __len__(self) -> int:
        return len(self._checked)
