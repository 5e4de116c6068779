"""Headwater's contracts: the events services exchange, their subjects and streams, the
queries they answer (`rpc`), the code blob, and the public contract with upstream systems.
Pydantic only, no I/O."""

from headwater.contracts.base import Event, parse_model
from headwater.contracts.code import (
    PROD_ENV,
    CodeBlob,
    CodeChanged,
    DatasetDefinition,
    Dimension,
    DimensionMapping,
    InputDefinition,
)
from headwater.contracts.dlq import DeadLetter
from headwater.contracts.errors import (
    HeadwaterError,
    InputError,
    RetryLater,
    Superseded,
    TransformError,
    TransientError,
)
from headwater.contracts.keys import (
    DATASET_NAME_PATTERN,
    DIMENSION_SEPARATOR,
    ENV_NAME_PATTERN,
    PARTITION_KEY_PATTERN,
    join_dimensions,
    split_dimensions,
    validate_dataset_name,
    validate_dimension_name,
    validate_dimensioned_key,
    validate_env_name,
    validate_partition_key,
)
from headwater.contracts.partitions import InputRef, PartitionLanded, PartitionRetracted
from headwater.contracts.registry import (
    FAMILIES,
    Family,
    dataset_of,
    family_at,
    family_of,
    handled_by,
    subject_of,
)
from headwater.contracts.states import PartitionState, TaskState
from headwater.contracts.subjects import Subjects
from headwater.contracts.tasks import TaskAttemptFailed, TaskFailed, TaskRequested
from headwater.contracts.upstream import (
    FORMATS,
    S3EventRecords,
    UpstreamEvent,
    format_of,
    split_object_key,
)

__all__ = [
    "DATASET_NAME_PATTERN",
    "DIMENSION_SEPARATOR",
    "ENV_NAME_PATTERN",
    "FAMILIES",
    "FORMATS",
    "PARTITION_KEY_PATTERN",
    "PROD_ENV",
    "CodeBlob",
    "CodeChanged",
    "DatasetDefinition",
    "DeadLetter",
    "Dimension",
    "DimensionMapping",
    "Event",
    "Family",
    "HeadwaterError",
    "InputDefinition",
    "InputError",
    "InputRef",
    "PartitionLanded",
    "PartitionRetracted",
    "PartitionState",
    "RetryLater",
    "S3EventRecords",
    "Subjects",
    "Superseded",
    "TaskAttemptFailed",
    "TaskFailed",
    "TaskRequested",
    "TaskState",
    "TransformError",
    "TransientError",
    "UpstreamEvent",
    "dataset_of",
    "family_at",
    "family_of",
    "format_of",
    "handled_by",
    "join_dimensions",
    "parse_model",
    "split_dimensions",
    "split_object_key",
    "subject_of",
    "validate_dataset_name",
    "validate_dimension_name",
    "validate_dimensioned_key",
    "validate_env_name",
    "validate_partition_key",
]
