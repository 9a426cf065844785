"""One contract, every ObjectStore backend: the local directory and S3 (moto's real HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from driftloop.shared.errors import InvalidInput, NotFound, Unavailable
from driftloop.shared.objectstore import LocalObjectStore, ObjectStore
from driftloop.shared.s3 import S3ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    client = Minio(endpoint, access_key="test", secret_key="test", secure=False)
    yield S3ObjectStore(client, f"contract-{tmp_path.name.lower().replace('_', '-')[:40]}")


def test_put_get_exists_list(store: ObjectStore) -> None:
    store.put("a/b/one.bin", b"1")
    store.put("a/b/two.bin", b"22")
    store.put("a/c.bin", b"333")
    assert store.get("a/b/two.bin") == b"22"
    assert store.exists("a/c.bin") and not store.exists("a/nope.bin")
    assert store.list("a/b/") == ["a/b/one.bin", "a/b/two.bin"]
    assert store.list("a/") == ["a/b/one.bin", "a/b/two.bin", "a/c.bin"]
    assert store.list("zzz/") == []


def test_overwrite_replaces_whole_object(store: ObjectStore) -> None:
    store.put("k.bin", b"old-longer-value")
    store.put("k.bin", b"new")
    assert store.get("k.bin") == b"new"


def test_missing_object_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.get("missing/key.bin")


def test_large_object_round_trips(store: ObjectStore) -> None:
    data = bytes(range(256)) * (20 * 1024 * 1024 // 256)  # 20 MiB: multipart on S3
    store.put("big.bin", data)
    assert store.get("big.bin") == data


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b"])
def test_traversal_is_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put(key, b"x")


def test_unreachable_s3_is_unavailable() -> None:
    from driftloop.shared.cli.stack.broker import free_port

    client = Minio(f"127.0.0.1:{free_port()}", access_key="x", secret_key="y", secure=False)
    client._http.connection_pool_kw["retries"] = 0  # type: ignore[attr-defined]
    with pytest.raises(Unavailable):
        S3ObjectStore(client, "bucket")
