"""The S3 back end of the object store: any S3-compatible endpoint (MinIO in the compose stack,
moto in tests). `objectstore.open_store` loads it when the settings name an endpoint."""

import asyncio
import io
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from headwater.contracts.errors import TransientError
from headwater.runtime.objectstore import PROBE_TIMEOUT_S, ObjectNotFound, check_key

T = TypeVar("T")


class S3Store:
    """Any S3-compatible endpoint (MinIO in the compose stack, moto in tests)."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, region: str, timeout_s: float = 30.0
    ) -> None:
        url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")

        def client(http: urllib3.PoolManager) -> Minio:
            return Minio(
                url.netloc,
                access_key=access_key,
                secret_key=secret_key,
                secure=url.scheme == "https",
                region=region,
                http_client=http,
            )

        # minio's default waits 5 minutes on a silent server; a bounded wait turns an outage
        # into a TransientError, so the message is retried later instead of holding a worker.
        self.client = client(
            urllib3.PoolManager(
                maxsize=16,  # services call S3 from several threads at once
                timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
                retries=urllib3.Retry(
                    total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
                ),
            )
        )
        # Readiness probes look with a client of their own: short timeouts, no retries, so a
        # store that does not answer makes the service not ready within a probe's timeout.
        self._probe_client = client(
            urllib3.PoolManager(
                maxsize=4,  # every bucket at once
                timeout=urllib3.Timeout(connect=PROBE_TIMEOUT_S, read=PROBE_TIMEOUT_S),
                retries=False,
            )
        )
        self.description = f"{url.scheme}://{url.netloc}"

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except S3Error:
            raise
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timeouts
            raise TransientError(f"object storage {self.description}: {exc}") from exc

    async def ensure_bucket(self, bucket: str) -> None:
        def make() -> None:
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        await self._call(make)

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        key = check_key(key)
        await self._call(lambda: self.client.put_object(bucket, key, io.BytesIO(data), len(data)))

    async def get(self, bucket: str, key: str) -> bytes:
        key = check_key(key)

        def read() -> bytes:
            response = self.client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return await self._call(read)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(bucket, key) from None
            raise

    async def exists(self, bucket: str, key: str) -> bool:
        key = check_key(key)

        def stat() -> bool:
            try:
                self.client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NotFound", "ResourceNotFound"):
                    return False
                raise
            return True

        return await self._call(stat)

    async def list(self, bucket: str, prefix: str) -> list[str]:
        return await self._call(
            lambda: sorted(
                o.object_name
                for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            )
        )

    async def delete(self, bucket: str, key: str) -> None:
        key = check_key(key)
        await self._call(lambda: self.client.remove_object(bucket, key))

    async def probe(self, bucket: str) -> None:
        try:
            found = await self._call(lambda: self._probe_client.bucket_exists(bucket))
        except S3Error as exc:  # it answers, and refuses: credentials, policy
            raise TransientError(f"object storage {self.description}: {exc.code}") from exc
        if not found:
            raise TransientError(f"object storage {self.description}: no bucket {bucket}")
