"""Where reference profiles come from: the registry names the key, the object store holds it.

`ProfileSource` is what the event handler needs; `RegistryProfiles` is the real one (gRPC).
Versions are taken from the registry, not from the profile, which training may build before
the registry has numbered the version.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import grpc
import structlog

from driftloop.protos.registry.v1 import registry_pb2, registry_pb2_grpc
from driftloop.shared.errors import NotFound, Unavailable
from driftloop.shared.grpc.client import aio_channel
from driftloop.shared.objectstore import ObjectStore
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.settings import CommonSettings

log = structlog.get_logger(__name__)


class ProfileSource(Protocol):
    async def version_profile(self, model: str, version: str) -> ReferenceProfile:
        """The reference profile of one version; NotFound when there is none."""
        ...

    async def production_profile(self, model: str) -> tuple[str, ReferenceProfile] | None:
        """(production version, its profile); None when the model has no production version."""
        ...

    async def production_profiles(self) -> list[tuple[str, str, ReferenceProfile]]:
        """(model, production version, profile) for every model that has a production version."""
        ...


class RegistryProfiles:
    """Asks the registry for `profile_uri` (an object key) and reads the profile from the store."""

    def __init__(self, common: CommonSettings, store: ObjectStore, *, timeout: float = 5.0) -> None:
        self._common = common
        self._store = store
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        if self._channel is None:  # built lazily: an aio channel belongs to the running loop
            self._channel = aio_channel(self._common, "registry")
        return registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def version_profile(self, model: str, version: str) -> ReferenceProfile:
        request = registry_pb2.GetVersionRequest(model=model, version=version)
        mv = await self._call(
            self._stub().GetVersion(request, timeout=self._timeout),
            f"version {version} of {model!r}",
        )
        if not mv.profile_uri:
            raise NotFound(f"version {version} of model {model!r} has no reference profile")
        data = await asyncio.to_thread(self._store.get, mv.profile_uri)
        return ReferenceProfile.from_json(data)

    async def production_profile(self, model: str) -> tuple[str, ReferenceProfile] | None:
        try:
            found = await self._call(
                self._stub().GetModel(
                    registry_pb2.GetModelRequest(name=model), timeout=self._timeout
                ),
                f"model {model!r}",
            )
        except NotFound:
            return None
        if not found.production_version:
            return None
        version = found.production_version
        return version, await self.version_profile(model, version)

    async def production_profiles(self) -> list[tuple[str, str, ReferenceProfile]]:
        listing = await self._call(
            self._stub().ListModels(registry_pb2.ListModelsRequest(), timeout=self._timeout),
            "the model list",
        )
        profiles = []
        for m in listing.models:
            if not m.production_version:
                continue
            try:
                profile = await self.version_profile(m.name, m.production_version)
                profiles.append((m.name, m.production_version, profile))
            except NotFound as exc:
                log.warning(
                    "profile_missing", model=m.name, version=m.production_version, error=str(exc)
                )
        return profiles

    async def _call(self, call, what: str):  # type: ignore[no-untyped-def]
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"registry: {what} not found: {exc.details()}") from exc
            raise Unavailable(
                f"registry at {self._common.address('registry')} failed on {what}: "
                f"{exc.code().name} {exc.details()}"
            ) from exc
