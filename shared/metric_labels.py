"""Bounded Prometheus label values: names that come from outside (datasets and models that any
producer can invent) become label values only up to a limit; the rest are counted as "other",
so a producer cannot make a service's metrics grow without bound."""

from __future__ import annotations

import threading

import structlog

log = structlog.get_logger(__name__)
OTHER = "other"
DEFAULT_LIMIT = 200


class BoundedLabel:
    """The first `limit` distinct values pass as themselves; later new ones read as "other"."""

    def __init__(self, label: str, limit: int = DEFAULT_LIMIT) -> None:
        self._label = label
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
            if not self._warned:
                self._warned = True
                log.warning("metric_label_capped", label=self._label, limit=self._limit)
        return OTHER
