"""Deployment: fetch a promoted artifact, verify and load it, warm it up, then swap it in.

Pure orchestration over injected fetch/load functions; a failure at any step leaves the current
version serving. Deployments of one model are serialized; different models deploy in parallel.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from driftloop.services.serving.core import form_memo, metrics, numeric_form, reference_sample
from driftloop.services.serving.core.artifact_cache import ArtifactCache
from driftloop.services.serving.core.form_memo import FormMemo
from driftloop.services.serving.core.inference import predict, warmup_input
from driftloop.services.serving.core.model_cache import is_partition
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared.artifacts import ModelSignature, signature
from driftloop.shared.errors import ArtifactRejected, NotFound, Unavailable

log = structlog.get_logger(__name__)

Fetch = Callable[[str], Awaitable[bytes]]
"""fetch(object_key) -> artifact bytes."""
Load = Callable[[bytes, str], Awaitable[Any]]
"""load(artifact_bytes, expected_sha256) -> pipeline; raises ArtifactRejected."""


@dataclass(frozen=True)
class Deployment:
    """What a deploy() did."""

    model: str
    version: str
    previous_version: str
    """The production version before (empty when there was none)."""
    load_seconds: float
    swapped: bool
    """False when the version was already production (nothing to do)."""


class Deployer:
    def __init__(
        self,
        slot: ModelSlot,
        fetch: Fetch,
        load: Load,
        *,
        compiled: bool = False,
        artifacts: ArtifactCache | None = None,
    ) -> None:
        """`compiled`: derive the ONNX Runtime form of all-numeric models (numeric_form).
        `artifacts`: where partition models' verified artifact bytes are kept for a reload
        after eviction (None: always fetch)."""
        self.slot = slot
        self._fetch = fetch
        self._load = load
        self._compiled = compiled
        self.artifacts = artifacts
        self.forms = FormMemo()
        """What deriving each artifact's forms found: a reload does not check or compile again."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_swap: list[Callable[[LoadedModel], None]] = []
        self.rejected: set[tuple[str, str]] = set()
        """(model, version) whose deploy failed for a reason that cannot change by itself (a
        refused or malformed artifact): reconcile does not retry them (the failure is reported
        once); a new promotion moves production on."""

    def watch_swaps(self, callback: Callable[[LoadedModel], None]) -> None:
        """Call `callback(loaded)` right after each swap, before any other task runs (the
        model cache accounts partition models' memory there)."""
        self._on_swap.append(callback)

    async def deploy(self, model: str, version: str, artifact_key: str, sha256: str) -> Deployment:
        """Make `version` production; raise (keeping the current version) when it cannot be."""
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            if self.slot.production_version(model) == version:
                versions = self.slot.versions(model)
                previous = versions[1] if len(versions) > 1 else ""
                return Deployment(model, version, previous, 0.0, swapped=False)
            started = time.perf_counter()
            loaded = self.slot.loaded(model, version)
            if loaded is None or loaded.sha256 != sha256:
                try:
                    loaded = await self._prepare(model, version, artifact_key, sha256)
                except Exception as exc:
                    metrics.DEPLOY_FAILURES.labels(metrics.series(model)).inc()
                    if not isinstance(exc, Unavailable | NotFound):
                        # why: an unreachable store or an artifact not there yet can change by
                        # themselves; a refused or malformed one (a key with a NUL byte, bytes
                        # that are no pipeline) would fail the same way every retry
                        self.rejected.add((model, version))
                    raise
            was_shadow = self.slot.shadow(model) is loaded
            replaced = self.slot.swap(loaded)
            for callback in self._on_swap:
                callback(loaded)
            if was_shadow:
                metrics.show_shadow_version(model, "")
            self.rejected.discard((model, version))
            seconds = time.perf_counter() - started
            metrics.record_swap(model, version, seconds)
            log.info(
                "model_swapped",
                model=model,
                version=version,
                previous_version=replaced.version if replaced else "",
                load_seconds=seconds,
                numeric_form=type(loaded.numeric).__name__ if loaded.numeric else "",
            )
            return Deployment(model, version, replaced.version if replaced else "", seconds, True)

    async def deploy_shadow(self, model: str, version: str, artifact_key: str, sha256: str) -> bool:
        """Load `version` as the model's shadow, the same safe way as production (hash checked,
        warm-up); False when there was nothing to do (already the shadow, or production)."""
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            current = self.slot.shadow(model)
            if self.slot.production_version(model) == version or (
                current is not None and current.version == version and current.sha256 == sha256
            ):
                return False
            started = time.perf_counter()
            loaded = self.slot.loaded(model, version)
            if loaded is None or loaded.sha256 != sha256:
                loaded = await self._prepare(model, version, artifact_key, sha256)
            replaced = self.slot.set_shadow(loaded)
            metrics.show_shadow_version(model, version)
            log.info(
                "shadow_loaded",
                model=model,
                version=version,
                replaced_shadow=replaced.version if replaced else "",
                load_seconds=time.perf_counter() - started,
            )
            return True

    async def _prepare(
        self, model: str, version: str, artifact_key: str, sha256: str
    ) -> LoadedModel:
        # a partition model evicted and loaded again: its bytes from the artifact cache (they
        # loaded under this sha256 before, and load checks the hash again), not the store
        keep = self.artifacts is not None and bool(sha256) and is_partition(model)
        cached = self.artifacts.get(sha256) if keep and self.artifacts is not None else None
        data = cached if cached is not None else await self._fetch(artifact_key)
        try:
            pipeline = await self._load(data, sha256)
        except ArtifactRejected:
            if cached is None or self.artifacts is None:
                raise
            # never expected (they loaded before): the store's bytes decide, as without a cache
            log.warning("cached_artifact_refused", model=model, version=version)
            self.artifacts.discard(sha256)
            cached = None
            data = await self._fetch(artifact_key)
            pipeline = await self._load(data, sha256)
        try:
            sig = signature(pipeline)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactRejected(
                f"artifact {artifact_key!r} is not a driftloop pipeline (prep + model): {exc}"
            ) from exc
        reference = await self._reference_rows(model, version, artifact_key, pipeline, sig, sha256)
        # the numeric form is derived from the verified pipeline and checked against it here,
        # once per version, so requests skip pandas without trusting anything new
        numeric = await asyncio.to_thread(
            functools.partial(
                numeric_form.derive,
                pipeline,
                sig,
                compiled=self._compiled,
                memo=self.forms,
                sha256=sha256,
                reference=reference,
            )
        )
        loaded = LoadedModel(model, version, pipeline, sig, sha256, numeric, len(data))
        try:
            labels, _ = await asyncio.to_thread(predict, loaded, warmup_input(loaded))
        except Exception as exc:
            raise ArtifactRejected(
                f"model {model!r} version {version!r} failed its warm-up prediction: {exc}"
            ) from exc
        if len(labels) != 1:
            raise ArtifactRejected(
                f"model {model!r} version {version!r} answered {len(labels)} rows for 1 in warm-up"
            )
        if labels.ndim != 1:
            raise ArtifactRejected(
                f"model {model!r} version {version!r} predicts {labels.size} numbers per row: "
                "serving answers one prediction per row (a single-target regressor)"
            )
        if keep and cached is None and self.artifacts is not None:
            await asyncio.to_thread(self.artifacts.put, sha256, data)
        return loaded

    async def _reference_rows(
        self,
        model: str,
        version: str,
        artifact_key: str,
        pipeline: Any,
        sig: ModelSignature,
        sha256: str,
    ) -> np.ndarray | None:
        """The version's reference rows (its profile's training values), read from the store
        beside the artifact when deriving its forms will check a compiled form; None when no
        check will run, or when the profile is missing or unreadable: the compiled form is
        then checked on synthetic rows alone (compiled_form.py), and why is logged."""
        if not self._checks_compiled_form(pipeline, sig, sha256):
            return None
        key = reference_sample.profile_key(artifact_key)
        try:
            data = await self._fetch(key)
            return await asyncio.to_thread(reference_sample.from_profile, data, sig)
        except Exception as exc:  # noqa: BLE001 - the check still runs, on synthetic rows
            log.warning(
                "reference_sample_unavailable",
                model=model,
                version=version,
                profile_key=key,
                reason=f"{type(exc).__name__}: {exc}"[:500],
                checked_on="synthetic rows",
            )
            return None

    def _checks_compiled_form(self, pipeline: Any, sig: ModelSignature, sha256: str) -> bool:
        """Whether deriving this version's forms will compare a compiled form with scikit-learn
        (only then are its reference rows worth a read): compiling is on, every feature is
        numeric, the memo has no outcome for these bytes, and the pipeline's shape may
        convert. A reload after eviction reads no profile."""
        if not self._compiled or not sig.features:
            return False
        if any(f.kind != "numeric" for f in sig.features):
            return False
        known = self.forms.get(sha256) if sha256 else None
        if known is not None and not (known.numeric and known.compiled == "untried"):
            return False
        return self.forms.compiles(form_memo.shape(pipeline))
