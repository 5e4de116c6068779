"""Every kind of message Headwater exchanges, in one table: its family (name), model, subject,
stream, who publishes it and which services must handle it.

The services' dispatchers (`handled_by`, `family_at`), `emit` (headwater.runtime.messaging),
the scheduler's outbox and the AsyncAPI generator read it; `tests/unit/test_registry.py` fails
when a service named as a consumer has no handler for a family, or handles one it is not named
for. Subjects themselves are spelled in `Subjects`, once.
"""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from headwater.contracts.code import CodeChanged, DatasetDefinition
from headwater.contracts.dlq import DeadLetter
from headwater.contracts.partitions import PartitionLanded, PartitionRetracted
from headwater.contracts.subjects import Subjects
from headwater.contracts.tasks import TaskAttemptFailed, TaskFailed, TaskRequested
from headwater.contracts.upstream import S3EventRecords, UpstreamEvent


@dataclass(frozen=True)
class Family:
    """One kind of message. `subject(subjects, name)` is its subject for a dataset (a service,
    for a dead letter; unused for the S3 records' one subject)."""

    name: str  # as in the AsyncAPI document: "partition-landed"
    model: type[BaseModel]
    subject: Callable[[Subjects, str], str]
    stream: Callable[[Subjects], str]
    producer: str
    consumers: tuple[str, ...]  # the services that must handle it
    description: str

    @property
    def kind(self) -> str:
        """The name as stored in tables ("partition_landed")."""
        return self.name.replace("-", "_")


def _stream(name: str) -> Callable[[Subjects], str]:
    return lambda s: str(getattr(s, name))


FAMILIES: tuple[Family, ...] = (
    Family(
        "upstream",
        UpstreamEvent,
        Subjects.upstream,
        _stream("upstream_stream"),
        "upstream systems",
        ("change-detector",),
        "Public contract: a file landed in the landing bucket under DATASET/PARTITION/NAME.",
    ),
    Family(
        "s3-events",
        S3EventRecords,
        lambda s, _: s.s3_events,
        _stream("upstream_stream"),
        "MinIO (or any S3 bucket notification)",
        ("change-detector",),
        "Public contract: MinIO's standard S3 bucket-notification records for the landing bucket.",
    ),
    Family(
        "code-changed",
        CodeChanged,
        Subjects.code_changed,
        _stream("events_stream"),
        "spec-registry",
        ("scheduler", "lineage-indexer"),
        "spec-registry: a dataset's code SHA changed, or it was removed.",
    ),
    Family(
        "partition-landed",
        PartitionLanded,
        Subjects.partition_landed,
        _stream("events_stream"),
        "change-detector, executor",
        ("scheduler", "lineage-indexer"),
        "change-detector (source) or executor (derived): a partition has a new data SHA.",
    ),
    Family(
        "partition-retracted",
        PartitionRetracted,
        Subjects.partition_retracted,
        _stream("events_stream"),
        "change-detector",
        ("scheduler", "lineage-indexer"),
        "change-detector: a source partition's files were deleted; it no longer exists.",
    ),
    Family(
        "task-failed",
        TaskFailed,
        Subjects.task_failed,
        _stream("events_stream"),
        "executor",
        ("scheduler", "lineage-indexer"),
        "executor: a transform failed after its retries; the partition is errored.",
    ),
    Family(
        "task-attempt-failed",
        TaskAttemptFailed,
        Subjects.task_attempt_failed,
        _stream("events_stream"),
        "executor",
        ("scheduler",),
        "executor: one attempt of a transform failed (raised, timed out, or its worker died);"
        " sent for every failed attempt, the last included.",
    ),
    Family(
        "task-requested",
        TaskRequested,
        Subjects.task_requested,
        _stream("tasks_stream"),
        "scheduler",
        ("executor",),
        "scheduler: compute one fingerprint (work queue; executors compete).",
    ),
    Family(
        "dead-letter",
        DeadLetter,
        Subjects.dlq,
        _stream("dlq_stream"),
        "any service",
        (),  # read by `headwater dlq`, not by a service
        "any service: input it rejected, with the field and the reason.",
    ),
)
_BY_MODEL = {f.model: f for f in FAMILIES}


def family_of(message: BaseModel) -> Family:
    """The family of a message (by its model)."""
    return _BY_MODEL[type(message)]


def family_at(subjects: Subjects, subject: str) -> Family | None:
    """The family a subject of these `subjects` carries (None: not one of Headwater's)."""
    for f in FAMILIES:
        exact = f.subject(subjects, "")
        if subject == exact or (exact.endswith(".") and subject.startswith(exact)):
            return f
    return None


def handled_by(service: str) -> tuple[Family, ...]:
    """The families `service` must handle."""
    return tuple(f for f in FAMILIES if service in f.consumers)


def dataset_of(message: BaseModel) -> str:
    """The dataset a message is about (its subject's last token)."""
    dataset = getattr(message, "dataset", None)
    if isinstance(dataset, DatasetDefinition):
        return dataset.name
    if isinstance(dataset, str):
        return dataset
    raise TypeError(f"{type(message).__name__} names no dataset")


def subject_of(subjects: Subjects, message: BaseModel) -> str:
    """The subject a message about a dataset is published on."""
    return family_of(message).subject(subjects, dataset_of(message))
