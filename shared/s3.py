"""The object store on any S3 endpoint (MinIO, moto in tests) through the `minio` client, and
the store the settings choose. minio's exceptions are mapped to driftloop's here, once."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import structlog
import urllib3
from minio import Minio
from minio.error import S3Error

from driftloop.shared.errors import InvalidInput, NotFound, Unavailable
from driftloop.shared.names import check_key
from driftloop.shared.objectstore import LocalObjectStore, ObjectStore, check_prefix
from driftloop.shared.settings import CommonSettings

RETRY_SECONDS = 10.0
"""How long S3 calls retry an unreachable endpoint before raising Unavailable."""
T = TypeVar("T")
log = structlog.get_logger(__name__)


class S3ObjectStore:
    """A bucket on an S3 endpoint, through minio. Errors are mapped to driftloop's.

    Writes and reads that fail because the endpoint is unreachable (Unavailable) are retried
    with a doubling delay for up to `retry_s` seconds, then raise: a caller acknowledges
    nothing before its put returned, so a consumer does not commit and the message stays.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        retry_s: float = RETRY_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._retry_s = retry_s
        self._sleep = sleep
        with _mapped(f"bucket {bucket!r}"):
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)

    def _retrying(self, call: Callable[[], T]) -> T:
        waited, delay = 0.0, 0.1
        while True:
            try:
                return call()
            except Unavailable as exc:
                if waited >= self._retry_s:
                    raise
                log.warning("object_store_retrying", error=str(exc), waited_s=round(waited, 2))
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    def put(self, key: str, data: bytes) -> None:
        check_key(key)

        def put() -> None:
            with _mapped(key):
                self._client.put_object(
                    self._bucket, key, io.BytesIO(data), len(data), part_size=16 * 1024 * 1024
                )

        self._retrying(put)

    def get(self, key: str) -> bytes:
        check_key(key)

        def get() -> bytes:
            with _mapped(key):
                response = self._client.get_object(self._bucket, key)
                try:
                    return bytes(response.read())
                finally:
                    response.close()
                    response.release_conn()

        return self._retrying(get)

    def exists(self, key: str) -> bool:
        check_key(key)

        def stat() -> bool:
            try:
                with _mapped(key):
                    self._client.stat_object(self._bucket, key)
                return True
            except NotFound:
                return False

        return self._retrying(stat)

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)

        def listed() -> list[str]:
            with _mapped(f"prefix {prefix!r}"):
                objects = self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
                return sorted(o.object_name for o in objects if o.object_name)

        return self._retrying(listed)

    def uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Translate minio/urllib3 exceptions into NotFound / Unavailable, once, at the boundary."""
    try:
        yield
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
            raise NotFound(f"object store: {what} not found") from exc
        raise Unavailable(f"object store error on {what}: {exc.code}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Unavailable(f"object store unreachable ({what}): {exc}") from exc


def open_object_store(common: CommonSettings) -> ObjectStore:
    """The store the settings choose."""
    if common.object_store == "local":
        return LocalObjectStore(common.data_dir / "objects")
    s3 = common.s3
    missing = [
        f"DRIFTLOOP_S3__{name.upper()}"
        for name in ("access_key", "secret_key")
        if not getattr(s3, name).get_secret_value()
    ]
    if missing:
        raise InvalidInput(
            f"object_store is s3 but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
            " not set: give the store's keys (there is no default key)"
        )
    client = Minio(
        s3.endpoint,
        access_key=s3.access_key.get_secret_value(),
        secret_key=s3.secret_key.get_secret_value(),
        secure=s3.secure,
        region=s3.region,
    )
    return S3ObjectStore(client, s3.bucket)
