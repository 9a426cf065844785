"""Serving's view of the registry over the one registry client (shared/registry_client.py):
production and shadow versions and fleets' partition columns for the reconcile loop
(ProductionSource, ShadowSource, FleetSource).

Only maps the library's records to serving's ProductionVersion; errors pass through as the
client raises them (Unavailable while the registry is down, which reconcile waits out).
"""

from __future__ import annotations

from driftloop.services.serving.core.reconcile import ProductionVersion
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_mirror import FULL_EVERY_S, ModelMirror


class RegistryVersions:
    """Implements ProductionSource, ShadowSource and FleetSource (core/reconcile.py); unit
    tests hand it tests/registry_fake.py's FakeRegistry instead of the client."""

    def __init__(self, client: RegistryClient, *, full_every_s: float = FULL_EVERY_S) -> None:
        self._client = client
        # why: reconcile runs every few seconds; at 16,000 partitions listing everything each
        # time cost ~1.5 s and 4.8 MB, the changes since the last pass are a few brief rows
        self._mirror = ModelMirror(client, full_every_s=full_every_s)
        self._shadows: dict[str, str] = {}
        self._fleets: dict[str, tuple[str, ...]] = {}

    async def production_versions(self) -> dict[str, str]:
        models = (await self._mirror.refresh()).values()
        # why: one listing answers all three; shadow_versions() and fleet_columns() read
        # what it saw
        self._shadows = {m.name: m.shadow_version for m in models if m.shadow_version}
        # a partition model carries its fleet's spec too: only the fleets themselves
        self._fleets = {
            m.name: tuple(m.spec.partition_by)
            for m in models
            if m.spec.partition_by and not m.fleet
        }
        return {m.name: m.production_version for m in models if m.production_version}

    async def fleet_columns(self) -> dict[str, tuple[str, ...]]:
        """The fleets seen by the latest production_versions() call, with their columns."""
        return dict(self._fleets)

    async def shadow_versions(self) -> dict[str, str]:
        """The shadows seen by the latest production_versions() call (same listing)."""
        return dict(self._shadows)

    async def get(self, model: str, version: str) -> ProductionVersion:
        found = await self._client.get_version(model, version)
        return ProductionVersion(
            model=found.model,
            version=found.version,
            artifact_key=found.artifact_uri,
            sha256=found.artifact_sha256,
            correlation_id=found.lineage.correlation_id,
        )
