"""Object store safety: list() prefixes cannot leave the store; S3 calls ride out a short
outage by retrying, and give up with Unavailable after their budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.shared.errors import InvalidInput, NotFound, Unavailable
from driftloop.shared.objectstore import LocalObjectStore
from driftloop.shared.s3 import S3ObjectStore

pytestmark = pytest.mark.unit


def test_local_list_refuses_prefixes_that_leave_the_store(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("outside")
    store = LocalObjectStore(tmp_path / "objects")
    store.put("curated/ds/a.parquet", b"1")
    assert store.list("") == ["curated/ds/a.parquet"]
    assert store.list("curated/") == ["curated/ds/a.parquet"]
    assert store.list("curated/d") == ["curated/ds/a.parquet"]
    for bad in ("../", "..", "/etc/", "curated/../../", "a//b", "./curated", "c\\d"):
        with pytest.raises(InvalidInput):
            store.list(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab./\\", max_size=12))
def test_local_list_never_returns_keys_outside_the_root(tmp_path_factory: Any, prefix: str) -> None:
    root = tmp_path_factory.getbasetemp() / "list-fuzz"
    store = LocalObjectStore(root / "objects")
    (root / "outside").mkdir(parents=True, exist_ok=True)
    (root / "outside" / "x").write_text("no")
    try:
        keys = store.list(prefix)
    except InvalidInput:
        return
    assert all(not k.startswith("..") and "outside" not in k for k in keys)


class FlakyMinio:
    """A minio client whose calls fail with a connection error `failures` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.puts: list[str] = []

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise urllib3.exceptions.MaxRetryError(None, "/", "connection refused")  # type: ignore[arg-type]

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> None:
        self._maybe_fail()
        self.puts.append(key)

    def stat_object(self, bucket: str, key: str) -> None:
        self._maybe_fail()
        if key not in self.puts:
            from minio.error import S3Error

            raise S3Error(None, "NoSuchKey", "no", key, "r", "h")  # type: ignore[arg-type]


def test_s3_put_retries_through_a_short_outage() -> None:
    slept: list[float] = []
    client = FlakyMinio(failures=4)
    store = S3ObjectStore(client, "b", retry_s=10, sleep=slept.append)  # type: ignore[arg-type]
    store.put("k/1", b"data")
    assert client.puts == ["k/1"] and len(slept) == 4
    assert slept == sorted(slept), "the delay grows"
    assert store.exists("k/1") and not store.exists("k/2"), "NotFound is an answer, not retried"


def test_s3_put_gives_up_after_its_budget() -> None:
    slept: list[float] = []
    client = FlakyMinio(failures=10_000)
    store = S3ObjectStore(client, "b", retry_s=3, sleep=slept.append)  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        store.put("k/1", b"data")
    assert client.puts == [] and 3 <= sum(slept) < 6


def test_not_found_is_not_retried() -> None:
    slept: list[float] = []
    store = S3ObjectStore(FlakyMinio(0), "b", sleep=slept.append)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store._retrying(lambda: (_ for _ in ()).throw(NotFound("gone")))
    assert slept == []
