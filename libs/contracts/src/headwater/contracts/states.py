"""The states a partition and a task go through, named once (they are stored as these strings
and shown as them by the CLI and its JSON)."""

from enum import StrEnum


class PartitionState(StrEnum):
    """Where a partition stands. Only `ready` is read by what depends on it; `errored` and
    `blocked` block its readers; `waiting` waits for an input; `queued` for its task;
    `retracted`: a source partition whose files were deleted."""

    READY = "ready"
    WAITING = "waiting"
    QUEUED = "queued"
    ERRORED = "errored"
    BLOCKED = "blocked"
    RETRACTED = "retracted"


class TaskState(StrEnum):
    """Where a computation (a fingerprint) stands: asked for, done, failed for good (until a
    retry), cancelled (no longer wanted), or interrupted (an input could not be read)."""

    REQUESTED = "requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
