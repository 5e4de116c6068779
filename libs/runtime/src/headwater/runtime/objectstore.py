"""Object storage: one interface, two back ends (a local directory, or any S3 endpoint).

Keys are validated before they reach either back end; the local store writes atomically
(temp file, fsync, rename) so a crash never leaves a half-written object under its key.
"""

import asyncio
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from headwater.contracts.errors import InputError, TransientError
from headwater.runtime.settings import ServiceSettings

T = TypeVar("T")


class ObjectNotFound(InputError):
    """The object does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__("key", f"{bucket}/{key} does not exist")


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError("key", f"{key!r} is not a safe object key")
    if parts[-1].startswith(_TEMP_PREFIX):
        raise InputError("key", f"{key!r}: names starting {_TEMP_PREFIX!r} are the store's own")
    return key


# The local store's temp files: `~` is outside the object-name alphabet of the upstream
# contract, so no object anybody lands can be taken for one (names such as `.tmp-x.csv` are
# objects like any other).
_TEMP_PREFIX = ".tmp~"


def _is_temp(name: str) -> bool:
    """A temp file of this store, or one an older version left (`.tmp-` and random letters,
    no extension: never an object of a format Headwater reads)."""
    return name.startswith(_TEMP_PREFIX) or (name.startswith(".tmp-") and "." not in name[5:])


class ObjectStore(Protocol):
    """The operations Headwater needs of object storage."""

    description: str

    async def ensure_bucket(self, bucket: str) -> None: ...
    async def put(self, bucket: str, key: str, data: bytes) -> None: ...
    async def get(self, bucket: str, key: str) -> bytes: ...
    async def exists(self, bucket: str, key: str) -> bool: ...
    async def list(self, bucket: str, prefix: str) -> list[str]: ...
    async def delete(self, bucket: str, key: str) -> None: ...
    async def probe(self, bucket: str) -> None:
        """Raise TransientError unless `bucket` answers now (readiness: a quick look, no
        retries)."""
        ...


# Readiness asks the store once per probe: it must answer within this (no retries).
PROBE_TIMEOUT_S = 2.0


class LocalStore:
    """Buckets are directories under `root`; keys are relative paths inside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"file://{root}"

    def _path(self, bucket: str, key: str) -> Path:
        return self.root / bucket / _check_key(key)

    async def ensure_bucket(self, bucket: str) -> None:
        (self.root / bucket).mkdir(parents=True, exist_ok=True)

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(bucket, key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, bucket: str, key: str) -> bytes:
        path = self._path(bucket, key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise ObjectNotFound(bucket, key) from None

    async def exists(self, bucket: str, key: str) -> bool:
        return self._path(bucket, key).is_file()

    async def list(self, bucket: str, prefix: str) -> list[str]:
        base = self.root / bucket
        # Walk only the folder the prefix names (a landing lists DATASET/PARTITION/), never
        # the whole bucket: the cost of one landing must not grow with what the bucket holds.
        folder = prefix.rpartition("/")[0]
        start = self._path(bucket, folder) if folder else base
        if not start.is_dir():
            return []

        def walk() -> list[str]:
            return sorted(
                str(p.relative_to(base))
                for p in start.rglob("*")
                if p.is_file()
                and not _is_temp(p.name)
                and str(p.relative_to(base)).startswith(prefix)
            )

        return await asyncio.to_thread(walk)

    async def delete(self, bucket: str, key: str) -> None:
        self._path(bucket, key).unlink(missing_ok=True)

    async def probe(self, bucket: str) -> None:
        if not (self.root / bucket).is_dir():
            raise TransientError(f"object storage {self.description}: no folder {bucket}")


class S3Store:
    """Any S3-compatible endpoint (MinIO in the compose stack, moto in tests)."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, region: str, timeout_s: float = 30.0
    ) -> None:
        url = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        # minio's default waits 5 minutes on a silent server; a bounded wait turns an outage
        # into a TransientError, so the message is retried later instead of holding a worker.
        http = urllib3.PoolManager(
            maxsize=16,  # services call S3 from several threads at once
            timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self.client = Minio(
            url.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=url.scheme == "https",
            region=region,
            http_client=http,
        )
        self.description = f"{url.scheme}://{url.netloc}"
        # Readiness probes look with a client of their own: short timeouts, no retries, so a
        # store that does not answer makes the service not ready within a probe's timeout.
        self._probe_client = Minio(
            url.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=url.scheme == "https",
            region=region,
            http_client=urllib3.PoolManager(
                maxsize=4,  # every bucket at once
                timeout=urllib3.Timeout(connect=PROBE_TIMEOUT_S, read=PROBE_TIMEOUT_S),
                retries=False,
            ),
        )

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
        key = _check_key(key)
        await self._call(lambda: self.client.put_object(bucket, key, io.BytesIO(data), len(data)))

    async def get(self, bucket: str, key: str) -> bytes:
        key = _check_key(key)

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
        key = _check_key(key)

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
        key = _check_key(key)
        await self._call(lambda: self.client.remove_object(bucket, key))

    async def probe(self, bucket: str) -> None:
        try:
            found = await self._call(lambda: self._probe_client.bucket_exists(bucket))
        except S3Error as exc:  # it answers, and refuses: credentials, policy
            raise TransientError(f"object storage {self.description}: {exc.code}") from exc
        if not found:
            raise TransientError(f"object storage {self.description}: no bucket {bucket}")


def open_store(settings: ServiceSettings) -> ObjectStore:
    """The store the settings name: S3 when an endpoint is set, else the local directory."""
    if settings.s3_endpoint:
        if not (settings.s3_access_key and settings.s3_secret_key):
            raise InputError(
                "HEADWATER_S3_ACCESS_KEY", "an S3 endpoint needs an access key and a secret key"
            )
        return S3Store(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_region,
            settings.s3_timeout_s,
        )
    if settings.store_dir is None:
        raise InputError("HEADWATER_STORE_DIR", "set it, or HEADWATER_S3_ENDPOINT")
    return LocalStore(settings.store_dir)
