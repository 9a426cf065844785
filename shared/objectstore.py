"""The object store: curated data, artifacts, profiles and manifests, by key.

One small Protocol with two implementations chosen by settings: a local directory (here) and
any S3 endpoint through the `minio` client (driftloop.shared.s3, which also opens the store the
settings choose). Cores import this module only, so they never import minio.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import structlog

from driftloop.shared.errors import NotFound
from driftloop.shared.names import check_key

log = structlog.get_logger(__name__)


def check_prefix(prefix: str) -> str:
    """A list() prefix: empty, or a relative key (or the start of one, possibly ending in '/')
    with no '..' or '.' segment, so listing cannot leave the store."""
    if not prefix:
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class ObjectStore(Protocol):
    """Bytes by key. Keys are relative '/'-separated paths; writes are atomic per key."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise NotFound when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Keys starting with `prefix`, sorted."""
        ...

    def uri(self, key: str) -> str:
        """Where the object lives, for humans and lineage records."""
        ...


class LocalObjectStore:
    """A directory; each put writes a temp file and renames it, so readers never see halves."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"object {key!r} not found in {self._root}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        base = self._root
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return []
        keys = (
            p.relative_to(base).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()
