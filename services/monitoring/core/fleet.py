"""Labels for fleets: a fleet's labels name the fleet (what the caller addressed), so each one is
sent to the partition monitor whose model answered its request, found in a bounded index.

Pure domain logic. Serving logs the rows a partition model answered as PredictionLog(model=P,
fleet=F); their request ids go into F's RequestIndex (request id -> P). A LabelBatch for F is
split by it: ids found go to their partition's monitor, the rest to F's own monitor as before
(rows the global model answered, and labels that came before their prediction's log: F's
monitor holds those, and a partition's log arriving later takes them back, `ModelMonitor.
take_early`).

The index is bounded like a monitor's pending join (the fleet's max_pending_predictions): when it
forgets its oldest id, the partition's join forgets it too (`ModelMonitor.forget`), so a
fleet's predictions awaiting labels are bounded by one figure however many partitions it has.
Across a restart the index is rebuilt from the partitions' pending-join changelog
(adapters/changelog.py: it already records every partition's waiting and joined ids), oldest
first by the time the predictions were logged; nothing else is written for it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence

from driftloop.services.monitoring.core.performance import PendingState
from driftloop.shared import fleet as names
from driftloop.shared.errors import InvalidInput


def fleet_of(model: str) -> str | None:
    """The fleet of a partition model name; None for a plain name (or one that is not a valid
    partition name: it is then monitored as a plain model)."""
    try:
        parsed = names.parse(model)
    except InvalidInput:
        return None
    return parsed.fleet if parsed else None


def check_partition_log(model: str, fleet: str) -> None:
    """InvalidInput when a PredictionLog says `fleet` but `model` is not one of its partitions."""
    if fleet_of(model) != fleet:
        raise InvalidInput(
            f"PredictionLog for {model!r} names fleet {fleet!r}, but {model!r} is not a partition "
            f"of it (a partition model is named {fleet}/COLUMN=VALUE)"
        )


Routed = dict[str, tuple[list[str], list[str]]]
"""Model -> (request ids, labels) of a label batch, in the batch's order."""


class RequestIndex:
    """Which partition model answered each of a fleet's recent requests (bounded, oldest out)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.evicted = 0
        self._owner: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._names: dict[str, str] = {}
        """One string object per partition name, shared by all its entries."""

    def __len__(self) -> int:
        return len(self._owner)

    def get(self, request_id: str) -> str | None:
        return self._owner.get(request_id)

    def add(self, partition: str, request_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Index ids answered by `partition`; the (id, partition) pairs forgotten to make room."""
        name = self._names.setdefault(partition, partition)
        for request_id in request_ids:
            self._owner[request_id] = name
        return self._trim()

    def _trim(self) -> list[tuple[str, str]]:
        evicted = []
        while len(self._owner) > self.capacity:
            evicted.append(self._owner.popitem(last=False))
        self.evicted += len(evicted)
        return evicted

    def drop(self, partitions: set[str]) -> int:
        """Forget the ids answered by these partitions (another instance monitors them now);
        how many were forgotten."""
        kept = [(i, name) for i, name in self._owner.items() if name not in partitions]
        dropped = len(self._owner) - len(kept)
        if dropped:
            self._owner = collections.OrderedDict(kept)
            for partition in partitions:
                self._names.pop(partition, None)
        return dropped

    def split(self, request_ids: Sequence[str], labels: Sequence[str]) -> tuple[Routed, Routed]:
        """(labels by partition, labels of ids not indexed keyed by ""), in batch order."""
        routed: Routed = {}
        rest: Routed = {}
        for request_id, label in zip(request_ids, labels, strict=True):
            owner = self._owner.get(request_id, "")
            ids, kept = (routed if owner else rest).setdefault(owner, ([], []))
            ids.append(request_id)
            kept.append(label)
        return routed, rest


class FleetIndexes:
    """Every fleet's RequestIndex, built on the first log of one of its partitions."""

    def __init__(self, capacity_for: Callable[[str], int]) -> None:
        """`capacity_for(fleet)`: ids kept per fleet (its policy's max_pending_predictions)."""
        self._capacity_for = capacity_for
        self._indexes: dict[str, RequestIndex] = {}

    def knows(self, fleet: str) -> bool:
        return fleet in self._indexes

    def index(self, fleet: str) -> RequestIndex:
        found = self._indexes.get(fleet)
        if found is None:
            found = self._indexes[fleet] = RequestIndex(self._capacity_for(fleet))
        return found

    def add(self, fleet: str, partition: str, request_ids: Iterable[str]) -> list[tuple[str, str]]:
        return self.index(fleet).add(partition, request_ids)

    def drop(self, partitions: Iterable[str]) -> int:
        """Forget the ids these partition models answered (in whichever fleet's index)."""
        by_fleet: dict[str, set[str]] = {}
        for partition in partitions:
            fleet = fleet_of(partition)
            if fleet is not None and fleet in self._indexes:
                by_fleet.setdefault(fleet, set()).add(partition)
        return sum(self._indexes[f].drop(names) for f, names in by_fleet.items())

    def route(
        self, fleet: str, request_ids: Sequence[str], labels: Sequence[str]
    ) -> tuple[Routed, list[str], list[str]]:
        """A label batch addressed to `fleet`: (labels by partition, ids and labels left for the
        fleet's own monitor)."""
        found = self._indexes.get(fleet)
        if found is None:
            return {}, list(request_ids), list(labels)
        routed, rest = found.split(request_ids, labels)
        ids, kept = rest.get("", ([], []))
        return routed, ids, kept

    def restore(self, states: dict[str, list[tuple[str, PendingState]]]) -> int:
        """Rebuild the indexes from the partitions' pending-join changelog (model -> states,
        each model's oldest first): joined ids first, then waiting ones by logged time, so the
        oldest are forgotten first as before. Returns the ids indexed."""
        by_fleet: dict[str, list[tuple[float, int, str, str]]] = {}
        for model, model_states in states.items():
            fleet = fleet_of(model)
            if fleet is None:
                continue
            rows = by_fleet.setdefault(fleet, [])
            for order, (request_id, state) in enumerate(model_states):
                if isinstance(state, tuple):
                    rows.append((state[2], order, request_id, model))
                elif state is not None:
                    rows.append((float("-inf"), order, request_id, model))
        indexed = 0
        for fleet, rows in by_fleet.items():
            index = self.index(fleet)
            for _, _, request_id, model in sorted(rows, key=lambda r: (r[0], r[1])):
                index.add(model, (request_id,))
            indexed += len(index)
        return indexed


def group_evicted(evicted: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Evicted (id, partition) pairs as partition -> ids."""
    found: dict[str, list[str]] = {}
    for request_id, partition in evicted:
        found.setdefault(partition, []).append(request_id)
    return found
