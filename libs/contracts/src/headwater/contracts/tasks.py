"""Work: the scheduler asks for a computation; an executor reports each failed attempt and,
after the last, the failure."""

from datetime import datetime
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
    """A task failed for good (its last attempt failed, or an input was unusable): the
    scheduler marks its partition errored.

    Executors before this version also sent `retryable`, which nothing read (a `task failed`
    is final: the executor has retried already); it is retired, so such an event still parses."""

    RETIRED = {"retryable": bool}

    schema_version: Literal[1] = 1
    event_id: str
    fingerprint: str = Field(pattern=SHA_PATTERN)
    dataset: str
    partition_key: str
    attempt: int
    error: str
    traceback: str = ""
    # The task could not run because this input's object was missing or did not match its
    # data SHA (`error` says which): its producer is recomputed when it can be.
    damaged_input: InputRef | None = None
    # The code that failed and what it read (for lineage: OpenLineage's FAIL run names its job's
    # code SHA and its input versions). Absent from events of executors before these fields.
    code_sha: str | None = Field(default=None, pattern=SHA_PATTERN)
    inputs: tuple[InputRef, ...] = ()


# What one failed attempt keeps (UTF-8 bytes): its error's head and its traceback's tail.
ATTEMPT_ERROR_BYTES = 4096
ATTEMPT_TRACEBACK_BYTES = 2048


class TaskAttemptFailed(Event):
    """One run of a task's transform failed: it raised, timed out, or its worker died. Sent for
    every failed attempt, the last one included (then `TaskFailed` follows), so the error of
    each attempt is kept, whichever executor ran it."""

    schema_version: Literal[1] = 1
    event_id: str
    fingerprint: str = Field(pattern=SHA_PATTERN)
    dataset: str
    partition_key: str
    # Which request of the task (`TaskRequested.attempt`: 1, then one more per retry) and
    # which attempt within it (the delivery count).
    request: int = Field(ge=1)
    attempt: int = Field(ge=1)
    error: str = Field(max_length=ATTEMPT_ERROR_BYTES)
    traceback: str = Field(default="", max_length=ATTEMPT_TRACEBACK_BYTES)
    executor: str = Field(max_length=256)
    at: datetime


def head(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes from its start, saying how much was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    mark = f" [... {len(raw)} bytes in all]"
    return raw[: limit - len(mark.encode())].decode(errors="ignore") + mark


def tail(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes from its end, saying how much was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    mark = f"[... {len(raw)} bytes in all]\n"
    return mark + raw[len(raw) - limit + len(mark.encode()) :].decode(errors="ignore")
