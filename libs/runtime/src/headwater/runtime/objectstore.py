"""Object storage: one interface, two back ends (a local directory here, or any S3 endpoint in
`objectstore_s3`, loaded only when one is configured: its client costs every process that
imports it a tenth of a second).

Keys are validated before they reach either back end; the local store writes atomically
(temp file, fsync, rename) so a crash never leaves a half-written object under its key.
"""

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

from headwater.contracts.errors import InputError, TransientError
from headwater.runtime.settings import ServiceSettings


class ObjectNotFound(InputError):
    """The object does not exist."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__("key", f"{bucket}/{key} does not exist")


def check_key(key: str) -> str:
    """`key`, if it is a safe object key (no empty, `.` or `..` segment, not a temp name)."""
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
        return self.root / bucket / check_key(key)

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


def open_store(settings: ServiceSettings) -> ObjectStore:
    """The store the settings name: S3 when an endpoint is set, else the local directory."""
    if settings.s3_endpoint:
        if not (settings.s3_access_key and settings.s3_secret_key):
            raise InputError(
                "HEADWATER_S3_ACCESS_KEY", "an S3 endpoint needs an access key and a secret key"
            )
        from headwater.runtime.objectstore_s3 import S3Store

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
