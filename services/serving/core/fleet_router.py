"""Fleet routing: a request addressed to fleet F is split by each row's partition column values
(shared.fleet.partition_name) among the partitions' production models, the fleet's global model
answering rows whose partition has none (unknown or missing values too); a request addressed to
`F/COLUMN=VALUE` is answered by that partition model, or by the global model while it has no
production version. `plan` says which model answers which rows; `merge` puts the answers back
in request order. Scoring itself stays with InferenceService (batching, logging).

The answer is a plain V2 response: model_name is the name the request addressed; model_version
is the version that answered when one model answered every row, else empty (a fleet request's
rows may be answered by several models); the response parameter `driftloop_answered_by` (JSON,
model name -> version, in row order of first appearance) names every model that answered.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.services.serving.core import codec
from driftloop.services.serving.core.model_cache import ModelCache, is_partition
from driftloop.services.serving.core.outputs import OutputTensor, encode_outputs
from driftloop.services.serving.core.request_rows import column_values, take_rows
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import fleet
from driftloop.shared.errors import Conflict, InvalidInput, NotFound
from driftloop.shared.names import shown

ANSWERED_BY = "driftloop_answered_by"
"""Response parameter of a fleet or partition request: the models that answered (JSON)."""


@dataclass(frozen=True)
class RoutedPart:
    """Rows of a request and the model that answers them."""

    loaded: LoadedModel
    request: codec.InferenceRequest
    """The request holding only these rows, with the inputs this model takes."""
    rows: np.ndarray | None
    """The rows' places in the addressed request; None: all of them, in order."""
    fleet: str = ""
    """F, when a partition model of F answers rows of a request addressed to F (the log's
    PredictionLog.fleet)."""


@dataclass(frozen=True)
class Plan:
    model: str
    """The name the request addressed."""
    rows: int
    parts: tuple[RoutedPart, ...]


@dataclass(frozen=True)
class Answer:
    """One part's predictions (inference.predict) and the outputs its model answers with."""

    names: tuple[str, ...]
    labels: np.ndarray
    proba: np.ndarray


@dataclass(frozen=True)
class ModelView:
    """What ModelMetadata shows of an addressed name: a model that answers it, the versions,
    and the partition columns a request must add to that model's features."""

    name: str
    loaded: LoadedModel
    versions: list[str]
    extra_inputs: tuple[tuple[str, str], ...] = ()
    """(column, V2 datatype) of partition columns that are not features."""


class FleetRouter:
    def __init__(self, slot: ModelSlot, cache: ModelCache) -> None:
        self._slot = slot
        self.cache = cache

    def routes(self, model: str) -> bool:
        """Whether requests to `model` are routed: a fleet, or a partition model's name."""
        return is_partition(model) or bool(self.cache.columns(model))

    async def plan(self, request: codec.InferenceRequest) -> Plan:
        """Which model answers which rows; InvalidInput for a missing partition column,
        NotFound naming the partition value no model can answer."""
        parsed = fleet.parse(request.model)
        if parsed is not None:
            return await self._plan_partition(request, parsed)
        owner = request.model
        columns = self.cache.columns(owner)
        if request.version:  # a pinned version names the global model's version
            loaded = self._slot.get(owner, request.version)
            return Plan(owner, 0, (RoutedPart(loaded, _fit(request, loaded, columns), None),))
        named = {t.name for t in request.inputs}
        # the fleet's feature order, only needed to find a column inside an [N, F] tensor
        features = None if named.issuperset(columns) else await self._reference_features(owner)
        values = [column_values(request, c, features) for c in columns]
        total = len(values[0])
        if any(len(v) != total for v in values):
            raise InvalidInput(
                f"partition columns {list(columns)} have different row counts "
                f"({[len(v) for v in values]}): every input needs the same N"
            )
        names, displays, per_row = partition_names(owner, columns, values)
        if len(names) == 1:  # most requests: one row, or rows of one partition
            targets = [await self._target(owner, names[0], displays[0])]
        else:
            targets = await asyncio.gather(
                *(self._target(owner, n, d) for n, d in zip(names, displays, strict=True))
            )
        return _group(request, owner, columns, total, targets, per_row)

    async def _plan_partition(
        self, request: codec.InferenceRequest, parsed: fleet.PartitionName
    ) -> Plan:
        name = request.model
        loaded = await self._partition(name, parsed.fleet, request.version)
        columns = tuple(c for c, _ in parsed.values)
        return Plan(name, 0, (RoutedPart(loaded, _fit(request, loaded, columns), None),))

    async def _partition(self, name: str, owner: str, version: str) -> LoadedModel:
        """Partition model `name` (that version, when pinned), else the global model."""
        loaded = await self.cache.get(name)
        if loaded is None:
            return self._global(
                owner,
                f"partition model {name!r} has no production version here (or it could not "
                f"load), and fleet {owner!r} has no global production version to fall back to",
            )
        return self._slot.get(name, version) if version else loaded

    async def _target(self, owner: str, name: str, display: str) -> tuple[LoadedModel, str]:
        """The model for partition `name` ("" when the row has none) and the log's fleet."""
        if name and self.cache.wanted(name) is not None:
            loaded = await self.cache.get(name)
            if loaded is not None:
                return loaded, owner
        why = f"no partition model {name!r} in production" if name else "no partition has it"
        message = (
            f"fleet {owner!r} has no model for {display}: {why}, and no global production "
            f"version of {owner!r} to fall back to"
        )
        return self._global(owner, message), ""

    def _global(self, owner: str, message: str) -> LoadedModel:
        if not self._slot.has(owner):
            raise NotFound(message)
        return self._slot.get(owner)

    async def _reference_features(self, owner: str) -> tuple[str, ...] | None:
        """The fleet's feature order (every model of a fleet shares its spec)."""
        found = await self._representative(owner)
        return found.feature_names if found is not None else None

    async def _representative(self, owner: str) -> LoadedModel | None:
        """A model of the fleet: the global one, else a loaded partition, else the first
        partition with a production version, loaded; None when the fleet serves none."""
        if self._slot.has(owner):
            return self._slot.get(owner)
        prefix = owner + "/"
        for name in self.cache.loaded():
            if name.startswith(prefix) and self._slot.has(name):
                return self._slot.get(name)
        for name in self.cache.partitions(owner)[:1]:
            return await self.cache.get(name)
        return None

    # ModelReady / ModelMetadata ------------------------------------------------------------------

    def ready(self, name: str, version: str) -> bool:
        """Whether a request to `name` (a fleet or partition model) would find a model."""
        parsed = fleet.parse(name)
        owner = parsed.fleet if parsed else name
        if version:
            return self._slot.has(name, version)
        if parsed is not None and self.cache.wanted(name) is not None:
            return True
        return self._slot.has(owner) or (parsed is None and bool(self.cache.partitions(owner)))

    async def view(self, name: str, version: str) -> ModelView:
        """What ModelMetadata shows for `name`; NotFound when no model would answer it."""
        parsed = fleet.parse(name)
        if parsed is not None:
            loaded = await self._partition(name, parsed.fleet, version)
            return ModelView(name, loaded, self._slot.versions(loaded.model))
        if version:
            loaded = self._slot.get(name, version)
        else:
            found = await self._representative(name)
            if found is None:
                raise NotFound(f"fleet {name!r} serves no model yet (no production version)")
            loaded = found
        extra = tuple(
            (c, self._datatype(name, c))
            for c in self.cache.columns(name)
            if c not in loaded.feature_names
        )
        return ModelView(name, loaded, self._slot.versions(name), extra)

    def _datatype(self, owner: str, column: str) -> str:
        """FP64 when every known value of `column` is a number written as value_text writes
        one (so a float column sent as FP64 finds its partitions), else BYTES."""
        values = []
        for name in self.cache.partitions(owner):
            parsed = fleet.parse(name)
            if parsed is not None:
                values.append(dict(parsed.values).get(column, ""))
        return "FP64" if values and all(_canonical_number(v) for v in values) else "BYTES"


SMALL_REQUEST = 256
"""Rows up to which a request's partition keys are grouped in plain Python (cheaper than
pandas' hash tables for the 1-row requests that make most of the traffic)."""


def partition_names(
    owner: str, columns: Sequence[str], values: Sequence[np.ndarray]
) -> tuple[list[str], list[str], np.ndarray]:
    """The distinct partition model names of the rows ("" for a row whose value is missing or
    cannot name a partition: the global model answers it), how each shows in an error
    (`route_id=42`), and each row's index into them."""
    rows = len(values[0])
    combos: list[tuple[object, ...]]
    if rows <= SMALL_REQUEST:
        index: dict[tuple[object, ...], int] = {}
        keys = zip(*(np.asarray(v).tolist() for v in values), strict=True)
        per_row = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.intp, rows)
        combos = list(index)
    else:
        factorized = [pd.factorize(np.asarray(v, dtype=object)) for v in values]
        codes = np.stack([code for code, _ in factorized], axis=1)
        found, inverse = np.unique(codes, axis=0, return_inverse=True)
        per_row = inverse.reshape(-1)
        combos = [
            tuple(factorized[j][1][k] if k >= 0 else None for j, k in enumerate(combo))
            for combo in found.tolist()
        ]
    described = [_describe(owner, tuple(columns), combo) for combo in combos]
    return [d[0] for d in described], [d[1] for d in described], per_row


def _describe(owner: str, columns: tuple[str, ...], combo: tuple[object, ...]) -> tuple[str, str]:
    """(partition model name or "", how the values show in an error) of one combination of
    partition values."""
    if any(isinstance(v, bytes | str) and len(v) > fleet.MAX_VALUE_CHARS for v in combo):
        # names no partition (value_text refuses it); kept out of the cache: a client could
        # otherwise fill it with megabyte keys
        return "", "/".join(f"{c}={shown(_str(v))}" for c, v in zip(columns, combo, strict=True))
    return _describe_short(owner, columns, combo)


@functools.lru_cache(maxsize=32_768)
def _describe_short(
    owner: str, columns: tuple[str, ...], combo: tuple[object, ...]
) -> tuple[str, str]:
    """_describe, cached: the same few thousand partitions come back all day."""
    texts = [_text(v) for v in combo]
    display = "/".join(
        f"{c}={'<missing>' if t is None else t}" for c, t in zip(columns, texts, strict=True)
    )
    if any(t is None for t in texts):
        return "", display
    try:
        return fleet.partition_name(owner, dict(zip(columns, texts, strict=True))), display
    except InvalidInput:  # too long a name: no partition can have it
        return "", display


def _str(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text(value: object) -> str | None:
    """A partition value as training names it (fleet.value_text), None when it names none."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    try:
        return fleet.value_text(value)
    except (InvalidInput, UnicodeDecodeError):
        return None


def _canonical_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and fleet.value_text(number) == text


def _fit(
    request: codec.InferenceRequest,
    loaded: LoadedModel,
    columns: Sequence[str],
    rows: np.ndarray | None = None,
    total: int = 0,
) -> codec.InferenceRequest:
    """The request for `loaded`: its rows, without partition columns it does not take."""
    drop = [c for c in columns if c not in loaded.feature_names]
    return take_rows(request, rows, drop, total=total)


def _group(
    request: codec.InferenceRequest,
    owner: str,
    columns: Sequence[str],
    total: int,
    targets: Sequence[tuple[LoadedModel, str]],
    per_row: np.ndarray,
) -> Plan:
    """One part per answering model (and log fleet), each with its rows in request order."""
    groups: dict[tuple[int, str], int] = {}
    group_of_name = np.empty(len(targets), dtype=np.int64)
    for i, (loaded, tag) in enumerate(targets):
        group_of_name[i] = groups.setdefault((id(loaded), tag), len(groups))
    if len(groups) == 1:
        loaded, tag = targets[0]
        return Plan(owner, total, (RoutedPart(loaded, _fit(request, loaded, columns), None, tag),))
    per_group = group_of_name[per_row]
    target_of = {int(g): targets[i] for i, g in enumerate(group_of_name)}
    found, first_rows = np.unique(per_group, return_index=True)
    parts = []
    for g in found[np.argsort(first_rows)]:  # parts in the order of their first row
        rows = np.flatnonzero(per_group == g)
        loaded, tag = target_of[int(g)]
        parts.append(RoutedPart(loaded, _fit(request, loaded, columns, rows, total), rows, tag))
    return Plan(owner, total, tuple(parts))


def merge(plan: Plan, answers: Sequence[Answer]) -> tuple[list[OutputTensor], tuple[str, ...]]:
    """The answers of every part as one response's outputs, rows in request order, and the
    classes of the probabilities columns (the union, first-seen order); Conflict when the
    fleet's models answer different outputs (a spec changed task between versions)."""
    names = answers[0].names
    for part, answer in zip(plan.parts, answers, strict=True):
        if answer.names != names:
            raise Conflict(
                f"rows of this request to {plan.model!r} went to models with different outputs "
                f"({list(names)} and {list(answer.names)} from {part.loaded.model!r}): "
                "address one partition model at a time"
            )
    if len(answers) == 1:
        only, classes_of = answers[0], plan.parts[0].loaded.signature.classes
        return encode_outputs(names, only.labels, only.proba), classes_of
    classes: dict[str, int] = {}
    for part in plan.parts:
        for c in part.loaded.signature.classes:
            classes.setdefault(c, len(classes))
    numeric = all(a.labels.dtype.kind == "f" for a in answers)
    labels = np.empty(plan.rows, dtype=np.float64 if numeric else object)
    proba = np.zeros((plan.rows, len(classes)), dtype=np.float64)
    for part, answer in zip(plan.parts, answers, strict=True):
        rows = part.rows if part.rows is not None else np.arange(plan.rows)
        labels[rows] = answer.labels
        if classes:
            at = np.asarray([classes[c] for c in part.loaded.signature.classes], dtype=np.intp)
            proba[np.ix_(rows, at)] = answer.proba
    return encode_outputs(names, labels, proba), tuple(classes)


def answered_by(plan: Plan) -> tuple[tuple[str, str], ...]:
    """(model, version) of each model that answered, in order of its first row."""
    seen = dict.fromkeys((p.loaded.model, p.loaded.version) for p in plan.parts)
    return tuple(seen)
