"""The model slot: which version of each model answers, and which versions stay loaded.

A swap is one reference assignment with no await in between, so a request that already holds a
LoadedModel keeps predicting with it while new requests get the new version.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.errors import NotFound

SHOWN_NAMES = 20
"""Served model names an error message lists at most (a fleet may have thousands loaded)."""


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed-up version of a model: the pipeline and what it takes and gives."""

    model: str
    version: str
    pipeline: Any
    signature: ModelSignature
    sha256: str
    numeric: Any = None
    """The pipeline's numeric form (core/numeric_form.py: scores a float64 matrix in feature
    order, no DataFrame), when deploy derived and checked one; None: the pipeline takes a
    DataFrame."""
    artifact_bytes: int = 0
    """Size of the skops artifact it was loaded from (what model_cache's estimate starts from)."""

    @functools.cached_property
    def feature_index(self) -> pd.Index:
        """The feature names as a pandas Index, built once (every DataFrame reuses it)."""
        return pd.Index([f.name for f in self.signature.features])

    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.signature.features)

    @functools.cached_property
    def regressor(self) -> bool:
        """Whether the pipeline predicts a number per row (no classes)."""
        return self.signature.task == "regression"

    @functools.cached_property
    def class_labels(self) -> np.ndarray:
        """The class of each probabilities column, as an object array of str."""
        classes = self.signature.classes or tuple(str(c) for c in self.pipeline.classes_)
        return np.asarray(classes, dtype=object)


@dataclass(frozen=True)
class _Versions:
    production: LoadedModel
    previous: LoadedModel | None

    def find(self, version: str) -> LoadedModel | None:
        for loaded in (self.production, self.previous):
            if loaded is not None and loaded.version == version:
                return loaded
        return None

    def names(self) -> list[str]:
        return [m.version for m in (self.production, self.previous) if m is not None]


class ModelSlot:
    """Per model name: the production version plus the previous one, kept for instant rollback,
    and optionally a shadow version (scored on a copy of live traffic, never answering).

    Older versions are dropped on swap (their pipelines are freed once no request holds them).
    """

    def __init__(self) -> None:
        self._models: dict[str, _Versions] = {}
        self._shadows: dict[str, LoadedModel] = {}

    def set_shadow(self, loaded: LoadedModel) -> LoadedModel | None:
        """Make `loaded` the shadow of its model; return the shadow it replaced."""
        previous = self._shadows.get(loaded.model)
        self._shadows[loaded.model] = loaded
        return previous

    def clear_shadow(self, model: str, version: str = "") -> LoadedModel | None:
        """Drop the shadow of `model` (only if it is `version`, when given); return it."""
        current = self._shadows.get(model)
        if current is None or (version and current.version != version):
            return None
        return self._shadows.pop(model)

    def shadow(self, model: str) -> LoadedModel | None:
        return self._shadows.get(model)

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Make `loaded` the production version of its model; return the one it replaced."""
        shadow = self._shadows.get(loaded.model)
        if shadow is not None and shadow.version == loaded.version:
            del self._shadows[loaded.model]  # the shadow was promoted: it answers now
        current = self._models.get(loaded.model)
        if current is None:
            self._models[loaded.model] = _Versions(loaded, None)
            return None
        if current.production.version == loaded.version:
            self._models[loaded.model] = _Versions(loaded, current.previous)
            return current.production
        self._models[loaded.model] = _Versions(loaded, current.production)
        return current.production

    def remove(self, model: str) -> LoadedModel | None:
        """Stop serving `model` (all its versions and its shadow); return its production version.
        A request that already holds a LoadedModel finishes with it."""
        self._shadows.pop(model, None)
        entry = self._models.pop(model, None)
        return entry.production if entry is not None else None

    def drop_previous(self, model: str) -> LoadedModel | None:
        """Keep only `model`'s production version loaded; return the dropped previous one."""
        entry = self._models.get(model)
        if entry is None or entry.previous is None:
            return None
        self._models[model] = _Versions(entry.production, None)
        return entry.previous

    def get(self, model: str, version: str = "") -> LoadedModel:
        """The production version when `version` is empty, else that loaded version."""
        entry = self._models.get(model)
        if entry is None:
            names = sorted(self._models)
            served = ", ".join(names[:SHOWN_NAMES]) or "none"
            if len(names) > SHOWN_NAMES:
                served += f" and {len(names) - SHOWN_NAMES} more"
            raise NotFound(f"model {model!r} is not served (served models: {served})")
        if not version:
            return entry.production
        loaded = entry.find(version)
        if loaded is None:
            raise NotFound(
                f"model {model!r} version {version!r} is not loaded "
                f"(loaded versions: {', '.join(entry.names())}); omit the version for production"
            )
        return loaded

    def has(self, model: str, version: str = "") -> bool:
        """Whether get(model, version) would answer."""
        entry = self._models.get(model)
        return entry is not None and (not version or entry.find(version) is not None)

    def loaded(self, model: str, version: str) -> LoadedModel | None:
        """That version if it is loaded: production, previous, or the shadow."""
        entry = self._models.get(model)
        found = entry.find(version) if entry is not None else None
        shadow = self._shadows.get(model)
        if found is None and shadow is not None and shadow.version == version:
            return shadow
        return found

    def production_version(self, model: str) -> str | None:
        entry = self._models.get(model)
        return entry.production.version if entry is not None else None

    def versions(self, model: str) -> list[str]:
        """Loaded versions of `model`, production first; empty when the model is not served."""
        entry = self._models.get(model)
        return entry.names() if entry is not None else []

    def models(self) -> list[str]:
        return sorted(self._models)
