"""Partition events: a partition of a dataset has new content (a new data SHA)."""

from typing import Literal

from pydantic import Field

from headwater.contracts.base import Event

SHA_PATTERN = r"^[0-9a-f]{64}$"


class InputRef(Event):
    """One input partition a computation read, named by its data SHA."""

    dataset: str
    partition_key: str
    data_sha: str = Field(pattern=SHA_PATTERN)
    object_key: str


class PartitionLanded(Event):
    """A partition's content is stored under `object_key` with `data_sha`.

    For a source partition the fingerprint is its data SHA and `inputs` is empty; for a
    derived one it names the computation and `inputs` what it read.
    """

    schema_version: Literal[1] = 1
    event_id: str
    dataset: str
    partition_key: str
    data_sha: str = Field(pattern=SHA_PATTERN)
    # The data SHA version (headwater.core.hashing.DATA_SHA_VERSION) `data_sha` was computed
    # under, by whoever computed it; None from producers before it was said.
    data_sha_version: int | None = Field(default=None, ge=1)
    fingerprint: str = Field(pattern=SHA_PATTERN)
    code_sha: str | None = None
    object_key: str
    rows: int
    bytes: int
    inputs: tuple[InputRef, ...] = ()
    source_files: tuple[str, ...] = ()
    source_version: int | None = None  # a source partition's content version (1, 2, ...)
    # A computed partition: from the executor fetching the task to its result (input reads
    # and waiting for a free worker included), and the CPU time the worker spent on it
    # (decoding and verifying inputs, the transform, hashing and encoding the output).
    duration_ms: float = 0.0
    cpu_ms: float = Field(default=0.0, ge=0)
    trace_id: str | None = None
    # The computation was run again because its stored object was missing or damaged; the
    # object under `object_key` was written anew.
    repaired: bool = False
    # A computed partition: which delivery of its task ran the transform that made it (the
    # earlier ones failed, or were lost), so `why` counts every run.
    attempt: int = Field(default=1, ge=1)


class PartitionRetracted(Event):
    """A source partition's files were all deleted: it no longer exists, and what read it is
    recomputed without it (or retracted in turn)."""

    schema_version: Literal[1] = 1
    event_id: str
    dataset: str
    partition_key: str
    source_version: int
