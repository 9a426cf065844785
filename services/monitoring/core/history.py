"""Drift history that survives restarts: each DriftDetected decision, with its evidence and the
ids of the published envelope, as one JSON object in the object store.

Keys: monitoring/<model>/history/<decided_at in ms, 15 digits>-<episode_id>.json, so a listing
of a model's prefix is in time order. Pure domain over the ObjectStore protocol (sync calls:
the event handler runs them in a worker thread).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass
from typing import Any

from driftloop.services.monitoring.core.drift import FeatureDrift
from driftloop.services.monitoring.core.monitor import DriftDecision
from driftloop.shared.objectstore import ObjectStore

PREFIX = "monitoring/"


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded decision and the envelope it was published in."""

    decision: DriftDecision
    event_id: str = ""
    correlation_id: str = ""


def history_key(decision: DriftDecision) -> str:
    millis = round(decision.decided_at * 1000)
    return f"{PREFIX}{decision.model}/history/{millis:015d}-{decision.episode_id}.json"


def entry_to_json(entry: HistoryEntry) -> bytes:
    return json.dumps(dataclasses.asdict(entry), sort_keys=True).encode()


def entry_from_json(data: bytes) -> HistoryEntry:
    raw: dict[str, Any] = json.loads(data)
    decision = dict(raw["decision"])
    decision["features"] = tuple(FeatureDrift(**f) for f in decision["features"])
    decision["reasons"] = tuple(decision.get("reasons", ()))  # entries before reasons have none
    decision["partitions"] = tuple((str(p), str(v)) for p, v in decision.get("partitions", ()))
    return HistoryEntry(
        decision=DriftDecision(**decision),
        event_id=raw.get("event_id", ""),
        correlation_id=raw.get("correlation_id", ""),
    )


class DriftHistory:
    """Every recorded decision, in memory and (when given a store) persisted in it."""

    def __init__(self, store: ObjectStore | None = None) -> None:
        self._store = store
        self._entries: dict[str, HistoryEntry] = {}
        self._by_model: dict[str, set[str]] = {}
        """Model -> keys of its entries (a fleet episode's under each partition it lists too:
        a fleet's thousands of partitions each look theirs up when they load)."""
        self._lock = threading.Lock()

    def load(self) -> int:
        """Read every persisted entry (on start); returns how many there are."""
        if self._store is None:
            return 0
        keys = [
            k
            for k in self._store.list(PREFIX)
            if "/history/" in k and k.endswith(".json") and k not in self._entries
        ]
        loaded = {k: entry_from_json(self._store.get(k)) for k in keys}
        with self._lock:
            for key, entry in loaded.items():
                self._add(key, entry)
            return len(self._entries)

    def record(
        self, decision: DriftDecision, event_id: str = "", correlation_id: str = ""
    ) -> HistoryEntry:
        entry = HistoryEntry(decision, event_id, correlation_id)
        key = history_key(decision)
        if self._store is not None:
            self._store.put(key, entry_to_json(entry))
        with self._lock:
            self._add(key, entry)
        return entry

    def _add(self, key: str, entry: HistoryEntry) -> None:
        self._entries[key] = entry
        d = entry.decision
        for model in (d.model, *(p for p, _ in d.partitions)):
            self._by_model.setdefault(model, set()).add(key)

    def entries(self, model: str = "") -> list[HistoryEntry]:
        """Recorded entries of one model (or, empty name, all), oldest first; a partition's
        include the fleet episodes that list it."""
        with self._lock:
            if model:
                found = [self._entries[k] for k in self._by_model.get(model, ())]
            else:
                found = list(self._entries.values())
        return sorted(found, key=lambda e: (e.decision.decided_at, e.decision.episode_id))

    def latest(self, model: str) -> HistoryEntry | None:
        found = self.entries(model)
        return found[-1] if found else None

    def latest_episode(self, model: str) -> tuple[str, str, float] | None:
        """(episode id, version of `model`, decided at) of its latest episode: its own decision
        or a fleet episode that lists it."""
        entry = self.latest(model)
        if entry is None:
            return None
        d = entry.decision
        version = d.version if d.model == model else dict(d.partitions)[model]
        return d.episode_id, version, d.decided_at
