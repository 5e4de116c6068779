"""Work: the scheduler asks for a computation; an executor reports a failure."""

from typing import Literal

from pydantic import Field

from headwater.contracts.base import Event
from headwater.contracts.code import DatasetDefinition
from headwater.contracts.partitions import SHA_PATTERN, InputRef


class TaskRequested(Event):
    """Compute `partition_key` of `dataset` with the code `dataset.code_sha` over `inputs`.

    The fingerprint is the task's identity (and its JetStream message id).
    """

    schema_version: Literal[1] = 1
    fingerprint: str = Field(pattern=SHA_PATTERN)
    dataset: DatasetDefinition
    partition_key: str
    inputs: tuple[InputRef, ...]
    attempt: int = 1
    # Compute it again although it was computed before: its stored object is missing or
    # damaged. The executor writes the object anew.
    repair: bool = False


class TaskFailed(Event):
    """A transform raised: the scheduler decides whether to retry."""

    schema_version: Literal[1] = 1
    event_id: str
    fingerprint: str = Field(pattern=SHA_PATTERN)
    dataset: str
    partition_key: str
    attempt: int
    error: str
    traceback: str = ""
    retryable: bool = True
    # The task could not run because this input's object was missing or did not match its
    # data SHA (`error` says which): its producer is recomputed when it can be.
    damaged_input: InputRef | None = None
