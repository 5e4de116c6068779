"""The public contract with upstream systems (DESIGN.md §4), stable across versions.

An upstream system writes a file under DATASET/PARTITION/NAME in the landing bucket and
publishes an UpstreamEvent on `hw.upstream.DATASET`; or MinIO publishes its standard S3
event records on `hw.s3.events`.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headwater.contracts.base import UntrustedEvent, parse_model
from headwater.contracts.errors import InputError
from headwater.contracts.keys import show_key, validate_dataset_name, validate_partition_key

FORMATS = ("parquet", "csv", "jsonl")
Format = Literal["parquet", "csv", "jsonl"]


def validate_object_name(name: str, field: str = "key") -> str:
    """The NAME part of DATASET/PARTITION/NAME: same alphabet as partition keys."""
    try:
        return validate_partition_key(name, field)
    except InputError as exc:
        raise InputError(field, exc.reason) from exc


class UpstreamEvent(UntrustedEvent):
    """A file landed for a source partition."""

    schema_version: Literal[1] = 1
    dataset: str
    partition: str
    key: str = Field(description="object key in the landing bucket: DATASET/PARTITION/NAME")
    format: Format
    event_id: str = Field(min_length=1, max_length=200)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        # Strict literals match by equality, so true and 1.0 would pass as 1.
        if type(value) is not int:
            raise InputError("schema_version", f"{value!r} is not a known schema version (1)")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return validate_dataset_name(value, "dataset")

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str) -> str:
        return validate_partition_key(value, "partition")

    @model_validator(mode="after")
    def _key_under_prefix(self) -> "UpstreamEvent":
        prefix = f"{self.dataset}/{self.partition}/"
        if not self.key.startswith(prefix):
            raise InputError("key", f"{show_key(self.key)} is not under {prefix!r}")
        validate_object_name(self.key[len(prefix) :], "key")
        return self


def split_object_key(key: str) -> tuple[str, str, str]:
    """DATASET/PARTITION/NAME -> its three parts, each validated."""
    parts = key.split("/")
    if len(parts) != 3:
        raise InputError("key", f"{show_key(key)} is not DATASET/PARTITION/NAME")
    dataset, partition, name = parts
    return (
        validate_dataset_name(dataset, "key"),
        validate_partition_key(partition, "key"),
        validate_object_name(name, "key"),
    )


def format_of(name: str) -> Format:
    """The format a file name claims by its extension."""
    lowered = name.lower()
    if lowered.endswith(".parquet"):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise InputError("key", f"{name!r} has no known format extension (.parquet, .csv, .jsonl)")


class _S3Object(BaseModel):
    model_config = ConfigDict(extra="allow")
    key: str


class _S3Bucket(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class _S3Entity(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: _S3Object
    # Always present in MinIO's and AWS's records; checked against the landing bucket by the
    # change-detector (absent, it is rejected there, after the key).
    bucket: _S3Bucket | None = None


class S3EventRecord(BaseModel):
    """One record of MinIO's/AWS's standard bucket notification (only what we read)."""

    model_config = ConfigDict(extra="allow")
    eventName: str
    s3: _S3Entity


class S3EventRecords(BaseModel):
    """MinIO's standard notification body. Other fields (Key, EventName) are ignored."""

    model_config = ConfigDict(extra="allow")
    Records: list[S3EventRecord]

    @staticmethod
    def parse(raw: bytes) -> "S3EventRecords":
        return parse_model(S3EventRecords, raw)
