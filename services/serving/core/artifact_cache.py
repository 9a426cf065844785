"""Recently loaded artifacts' bytes, compressed, within a byte budget: a partition model evicted
from memory loads again from here instead of the object store.

Only bytes that loaded (the loader checked their sha256 against the registry's) are kept, keyed
by that sha256; they are handed to the loader again, which checks the hash again, so the
registry's hash stays the one source of truth whatever this cache holds. A skops artifact is an
uncompressed zip: zlib at level 1 makes a gradient boosting partition model's 394 KiB into
~50 KiB, a quarter of the ~205 KiB its loaded pipeline holds, in ~2 ms (~1 ms back).
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict

from driftloop.services.serving.core import metrics

LEVEL = 1
"""zlib level: 1 already takes a skops zip to ~1/8 (its arrays and JSON repeat a lot);
higher levels gain a few percent for several times the time."""


class ArtifactCache:
    """sha256 -> compressed artifact bytes, least recently used dropped first while the
    compressed bytes exceed `budget_bytes` (0: keep nothing). Thread-safe."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._blobs: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        """sha256 -> (compressed bytes, original size)."""
        self._bytes = 0
        self._lock = threading.Lock()
        metrics.ARTIFACT_CACHE_BUDGET_BYTES.set(budget_bytes)

    def get(self, sha256: str) -> bytes | None:
        """The artifact's bytes as they were put, None when not kept (counted: hit or miss)."""
        with self._lock:
            found = self._blobs.get(sha256)
            if found is not None:
                self._blobs.move_to_end(sha256)
        if found is None:
            metrics.ARTIFACT_CACHE_MISSES.inc()
            return None
        metrics.ARTIFACT_CACHE_HITS.inc()
        return zlib.decompress(found[0], bufsize=found[1])

    def put(self, sha256: str, data: bytes) -> None:
        """Keep `data`, bytes that loaded after their hash matched `sha256`."""
        if not self.budget_bytes:
            return
        with self._lock:
            if sha256 in self._blobs:
                self._blobs.move_to_end(sha256)
                return
        packed = zlib.compress(data, LEVEL)
        if len(packed) > self.budget_bytes:
            return  # alone over budget: it would evict everything else for itself
        with self._lock:
            if sha256 not in self._blobs:
                self._blobs[sha256] = (packed, len(data))
                self._bytes += len(packed)
            while self._bytes > self.budget_bytes:
                _, (dropped, _) = self._blobs.popitem(last=False)
                self._bytes -= len(dropped)
            metrics.ARTIFACT_CACHE_BYTES.set(self._bytes)

    def discard(self, sha256: str) -> None:
        with self._lock:
            found = self._blobs.pop(sha256, None)
            if found is not None:
                self._bytes -= len(found[0])
            metrics.ARTIFACT_CACHE_BYTES.set(self._bytes)

    def __contains__(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._blobs

    @property
    def cached_bytes(self) -> int:
        """The compressed bytes held."""
        return self._bytes
