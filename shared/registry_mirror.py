"""Every registry model as last listed, kept current by asking only for the models changed since
the previous listing (ListModels' revision watermark), for loops that poll the whole registry.

Brief listings (a partition model without its fleet's spec): at 16,000 partitions a full
listing is ~4.8 MB and ~1.5 s; what changed in 5 s is usually a few rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from driftloop.shared.registry_types import Model, ModelListing

log = structlog.get_logger(__name__)

FULL_EVERY_S = 60.0
"""How often the whole registry is listed again anyway (the safety net)."""


class ModelLister(Protocol):
    """The one call the mirror makes (RegistryClient, tests/registry_fake.py's FakeRegistry)."""

    async def model_listing(
        self, *, fleet: str = "", brief: bool = False, changed_after: int = 0
    ) -> ModelListing: ...


class ModelMirror:
    """`refresh()` returns every model (brief: a partition model has no spec, dataset or
    target; a fleet or plain model has all). A listing in full replaces what is held, every
    `full_every_s`, when the registry's revision went back (a new registry database), or when
    the registry does not number revisions (an older registry: revision 0)."""

    def __init__(
        self,
        lister: ModelLister,
        *,
        full_every_s: float = FULL_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._full_every_s = full_every_s
        self._clock = clock
        self._models: dict[str, Model] = {}
        self._revision = 0
        self._full_at: float | None = None

    @property
    def revision(self) -> int:
        """The registry revision of the last listing (0: none yet, or an older registry)."""
        return self._revision

    async def refresh(self) -> dict[str, Model]:
        """Model name -> model, as of now. Errors pass through as the lister raises them (what
        was held is kept, and the next call asks for the same changes again)."""
        now = self._clock()
        due = self._full_at is None or now - self._full_at >= self._full_every_s
        if due or self._revision == 0:
            return await self._full(now)
        changed = await self._lister.model_listing(brief=True, changed_after=self._revision)
        if changed.revision < self._revision:
            log.info("registry_revision_went_back", was=self._revision, now=changed.revision)
            return await self._full(now)
        self._models.update((m.name, m) for m in changed.models)
        self._revision = changed.revision
        return dict(self._models)

    async def _full(self, now: float) -> dict[str, Model]:
        listed = await self._lister.model_listing(brief=True)
        self._models = {m.name: m for m in listed.models}
        self._revision, self._full_at = listed.revision, now
        return dict(self._models)
