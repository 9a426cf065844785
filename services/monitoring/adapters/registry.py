"""Monitoring's registry I/O over the one registry client (shared/registry_client.py): reference
profiles (the registry names the key, the object store holds it) and shadow evidence reports.

No decisions here (which reference, when to ask again: core/references.py); errors pass through
as the client raises them, so a refused token is never mistaken for an outage.
"""

from __future__ import annotations

import asyncio

from driftloop.services.monitoring.core.shadow import Evidence, Verdict
from driftloop.shared.errors import NotFound
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import ShadowEvidence

ACTOR = "monitoring"


class RegistryProfiles:
    """Implements core/references.py's ReferenceSource (and fleet_thresholds.py's
    PartitionCounts). Versions come from the registry, not from the profile, which training may
    build before the registry has numbered the version."""

    def __init__(self, client: RegistryClient, store: ObjectStore) -> None:
        self._client = client
        self._store = store

    async def production_versions(self) -> dict[str, str]:
        models = await self._client.list_models()
        return {m.name: m.production_version for m in models if m.production_version}

    async def production_version(self, model: str) -> str | None:
        return (await self._client.get_model(model)).production_version or None

    async def partition_count(self, fleet: str) -> int:
        """Implements core/fleet_thresholds.py's PartitionCounts: the fleet's Model counts its
        partitions (listing 16,000 of them to count them cost ~1.5 s and 4.8 MB); a registry
        that does not count them (0) is asked for a brief listing."""
        counted = (await self._client.get_model(fleet)).partitions
        return counted or len(await self._client.list_models(fleet=fleet, brief=True))

    async def profile(self, model: str, version: str) -> ReferenceProfile:
        found = await self._client.get_version(model, version)
        if not found.profile_uri:
            raise NotFound(f"version {version} of model {model!r} has no reference profile")
        data = await asyncio.to_thread(self._store.get, found.profile_uri)
        return ReferenceProfile.from_json(data)


class RegistryEvidence:
    """Implements core/shadow.py's EvidenceSink: ReportShadowEvidence (a mutating call)."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    async def report(self, evidence: Evidence) -> Verdict:
        reply = await self._client.report_shadow_evidence(
            ShadowEvidence(
                model=evidence.model,
                version=evidence.version,
                champion_version=evidence.champion_version,
                labelled=evidence.labelled,
                shadow_metrics=dict(evidence.shadow_metrics),
                champion_metrics=dict(evidence.champion_metrics),
                actor=ACTOR,
                shadow_only_right=evidence.shadow_only_right,
                champion_only_right=evidence.champion_only_right,
            )
        )
        return Verdict(reply.outcome, reply.reason, reply.version.status == "shadow")
