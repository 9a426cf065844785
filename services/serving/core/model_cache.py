"""Partition models at fleet scale: loaded on their first request, unloaded least recently
used first while the loaded ones' estimated memory exceeds DRIFTLOOP_SERVING_MODEL_MEMORY_MB.

A partition model (`FLEET/COLUMN=VALUE`) is never deployed at start or on reconcile: the cache
only records which version should load next (`want`). The first request loads it through the
deployer (hash check, warm-up, swap: the same machinery as every model), and concurrent first
requests share that one load. A promotion of a loaded partition swaps it as any promotion does;
of one that is not loaded, it only changes what loads next. Eviction takes a model out of the
slot; a request that already holds it finishes with it, so eviction fails no request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from driftloop.services.serving.core import metrics
from driftloop.services.serving.core.compiled_form import CompiledForm
from driftloop.services.serving.core.slot import LoadedModel
from driftloop.shared import fleet

if TYPE_CHECKING:  # deployment -> inference -> fleet_router and reconcile import this module
    from driftloop.services.serving.core.deployment import Deployer
    from driftloop.services.serving.core.reconcile import ProductionVersion

log = structlog.get_logger(__name__)

ONNX_SESSION_BYTES = 768 * 1024
"""What an ONNX Runtime session costs beyond its graph (a ridge regressor's compiled form: RSS
+682-919 KiB per model against +8 KiB for its scikit-learn form)."""
ONNX_GRAPH_FACTOR = 2.5
"""Session memory per byte of serialized ONNX graph (a compiled random forest: +12 MiB RSS for
a 4.7 MiB graph, beyond its scikit-learn form)."""


def estimated_bytes(loaded: LoadedModel) -> int:
    """The memory a loaded model holds, estimated: its skops artifact's size (the fitted arrays
    it unpacks to, give or take), plus its ONNX Runtime session when it has a compiled form.

    Measured (20 models per row, RSS growth of the serving process per model, scikit-learn form):
    ridge 150 KiB artifact / 8 KiB RSS, histogram gradient boosting 800-1000 KiB / 380-950 KiB,
    random forest 4.8-29 MiB / 2.3-27 MiB. RSS itself counts allocator slack, so per model it
    varies 2x between runs of the same load; summed over many models the estimate is the
    right size, erring high (a budget holds fewer models than would fit, not more)."""
    size = loaded.artifact_bytes
    if isinstance(loaded.numeric, CompiledForm):
        size += ONNX_SESSION_BYTES + int(ONNX_GRAPH_FACTOR * loaded.numeric.graph_bytes)
    return size


def is_partition(model: str) -> bool:
    """Whether `model` is a partition model's name (the cache's; anything else loads eagerly)."""
    return "/" in model


@dataclass(frozen=True)
class Wanted:
    """The version a partition model loads next, and where its artifact is when known (a
    promotion says; a reconcile pass only knows the version, so the load asks the registry)."""

    version: str
    artifact_key: str = ""
    sha256: str = ""


class VersionSource(Protocol):
    async def get(self, model: str, version: str) -> ProductionVersion: ...


class ModelCache:
    """The partition models' catalogue (what each should load, each fleet's partition columns)
    and the loaded ones, in least-recently-used order, within `budget_bytes` (0: no limit)."""

    def __init__(self, deployer: Deployer, registry: VersionSource, *, budget_bytes: int) -> None:
        self._deployer = deployer
        self._slot = deployer.slot
        self._registry = registry
        self.budget_bytes = budget_bytes
        self._wanted: dict[str, Wanted] = {}
        self._lru: OrderedDict[str, int] = OrderedDict()
        """Loaded partition model -> its estimated bytes; least recently used first."""
        self._bytes = 0
        self._loading: dict[str, asyncio.Future[LoadedModel | None]] = {}
        self._columns: dict[str, tuple[str, ...]] = {}
        self._fleets: dict[str, set[str]] = {}
        """Fleet -> its partition models that have a production version."""
        deployer.watch_swaps(self._swapped)
        metrics.PARTITION_MEMORY_BUDGET_BYTES.set(budget_bytes)

    # the catalogue ------------------------------------------------------------------------------

    def set_fleets(self, columns: Mapping[str, Sequence[str]]) -> None:
        """Each fleet's partition columns, from the registry's specs (a reconcile pass)."""
        self._columns.update({f: tuple(c) for f, c in columns.items() if c})

    def columns(self, fleet: str) -> tuple[str, ...]:
        """The partition columns of `fleet`; empty when it is not a known fleet."""
        return self._columns.get(fleet, ())

    def want(self, model: str, wanted: Wanted) -> str:
        """Record the version `model` loads next (it swaps now only if loaded: the caller
        deploys those); return the version wanted before ("" when none)."""
        before = self._wanted.get(model)
        if before is None:  # a new partition: learn its fleet (reconcile repeats the known)
            parsed = fleet.parse(model)
            if parsed is None:
                raise ValueError(f"{model!r} is not a partition model")
            self._columns.setdefault(parsed.fleet, tuple(c for c, _ in parsed.values))
            self._fleets.setdefault(parsed.fleet, set()).add(model)
        if before is None or before.version != wanted.version or wanted.artifact_key:
            self._wanted[model] = wanted
        return before.version if before is not None else ""

    def wanted(self, model: str) -> Wanted | None:
        return self._wanted.get(model)

    def partitions(self, fleet: str) -> list[str]:
        """The partition models of `fleet` with a production version, sorted."""
        return sorted(self._fleets.get(fleet, ()))

    def resident(self, model: str) -> bool:
        """Whether `model` is loaded or loading (a promotion of it must swap, not just record)."""
        return model in self._lru or model in self._loading or self._slot.has(model)

    # loading ------------------------------------------------------------------------------------

    async def get(self, model: str) -> LoadedModel | None:
        """The loaded production version of partition model `model`, loading it first when it
        is not loaded; None when it has no production version, or its load failed (logged and
        counted: the caller falls back to the fleet's global model)."""
        label = metrics.series(model)
        if self._slot.has(model):
            metrics.PARTITION_HITS.labels(label).inc()
            if model in self._lru:
                self._lru.move_to_end(model)
            return self._slot.get(model)
        wanted = self._wanted.get(model)
        if wanted is None or (model, wanted.version) in self._deployer.rejected:
            return None  # a refused artifact fails the same way every time: do not retry it
        metrics.PARTITION_MISSES.labels(label).inc()
        pending = self._loading.get(model)
        if pending is None:
            pending = asyncio.ensure_future(self._load(model, wanted))
            self._loading[model] = pending
            pending.add_done_callback(lambda done: self._loaded(model, done))
        # shielded: a caller that gives up (a cancelled request) does not cancel the others' load
        return await asyncio.shield(pending)

    def _loaded(self, model: str, done: asyncio.Future[LoadedModel | None]) -> None:
        if self._loading.get(model) is done:
            del self._loading[model]

    async def _load(self, model: str, wanted: Wanted) -> LoadedModel | None:
        label = metrics.series(model)
        started = time.perf_counter()
        try:
            if not wanted.artifact_key:
                found = await self._registry.get(model, wanted.version)
                wanted = Wanted(found.version, found.artifact_key, found.sha256)
                if self._wanted.get(model, wanted).version == wanted.version:
                    self._wanted[model] = wanted
            await self._deployer.deploy(model, wanted.version, wanted.artifact_key, wanted.sha256)
        except Exception as exc:  # noqa: BLE001 - the request falls back to the global model
            metrics.PARTITION_LOAD_FAILURES.labels(label).inc()
            log.warning(
                "partition_load_failed",
                model=model,
                version=wanted.version,
                error=f"{type(exc).__name__}: {exc}",
            )
            return None
        seconds = time.perf_counter() - started
        metrics.PARTITION_LOAD_SECONDS.labels(label).observe(seconds)
        log.info("partition_loaded", model=model, version=wanted.version, load_seconds=seconds)
        return self._slot.get(model) if self._slot.has(model) else None

    # memory -------------------------------------------------------------------------------------

    def _swapped(self, loaded: LoadedModel) -> None:
        """After any swap (a lazy load, a promotion, a reconcile): a partition keeps only its
        production version, which becomes the most recently used; then evict down to budget."""
        model = loaded.model
        if not is_partition(model):
            return
        self._slot.drop_previous(model)
        size = estimated_bytes(loaded)
        self._bytes += size - self._lru.pop(model, 0)
        self._lru[model] = size
        self._evict()
        self._show()

    def _evict(self) -> None:
        """Unload least recently used partitions while over budget; never the newest (the one
        a request is waiting for), even when it alone is over budget."""
        while self.budget_bytes and self._bytes > self.budget_bytes and len(self._lru) > 1:
            oldest = next(iter(self._lru))
            self._bytes -= self._lru.pop(oldest)
            self._slot.remove(oldest)
            metrics.PARTITION_EVICTIONS.labels(metrics.series(oldest)).inc()
            log.info("partition_evicted", model=oldest, loaded=len(self._lru), bytes=self._bytes)

    def _show(self) -> None:
        metrics.PARTITION_MODELS_LOADED.set(len(self._lru))
        metrics.PARTITION_MODEL_BYTES.set(self._bytes)

    @property
    def loaded_bytes(self) -> int:
        """The estimated memory of the loaded partition models."""
        return self._bytes

    def loaded(self) -> list[str]:
        """The loaded partition models, least recently used first."""
        return list(self._lru)
