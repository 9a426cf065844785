"""Models loaded from their artifacts, kept by SHA-256 for the next runs, least recently used
first out, bounded by the artifacts' bytes.

Why: a fleet's global model is the champion of every partition's first run (1,000 loads of one
artifact at 1,000 partitions, 25 ms each), and a version this process just registered (its
servable check loaded it) is the champion of its model's next attempt. The bytes are the ones
the SHA-256 names (artifacts.load_model checks it), so a kept model is the one a fresh load
would give; runs only predict with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from driftloop.shared import artifacts

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Artifact bytes kept at most: a fleet bench partition model is 0.4 MB as an artifact and 0.25 MB
loaded, so about 170 models, 40 MB of training's memory. Enough for the global model and the
versions registered lately; at 1,000 partitions an episode's retries load their champion again."""


class LoadedModels:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._models: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.loads = 0
        """Artifacts deserialised by `load` (how the tests see a model is loaded once)."""

    def __len__(self) -> int:
        return len(self._models)

    def load(self, sha256: str, read: Callable[[], bytes]) -> Any:
        """The model of the artifact `sha256`: kept, or read, checked and loaded (ArtifactRejected
        when the bytes are not the ones the hash names or hold an untrusted type)."""
        with self._lock:
            found = self._models.get(sha256)
            if found is not None:
                self._models.move_to_end(sha256)
                return found[0]
        body = read()
        model = artifacts.load_model(body, sha256)
        self.loads += 1
        self.keep(sha256, model, len(body))
        return model

    def keep(self, sha256: str, model: Any, nbytes: int) -> None:
        """Keep `model`, loaded from the `nbytes` bytes of the artifact `sha256` (a model larger
        than the whole bound is not kept)."""
        if nbytes > self._max_bytes:
            return
        with self._lock:
            old = self._models.pop(sha256, None)
            if old is not None:
                self._bytes -= old[1]
            self._models[sha256] = (model, nbytes)
            self._bytes += nbytes
            while self._bytes > self._max_bytes:
                _, (_, dropped) = self._models.popitem(last=False)
                self._bytes -= dropped
