"""The queries services answer over request-reply (`hw.rpc.SERVICE.VERB`): one request and one
reply model per query, and the one table of them (`RPCS`), as the event registry is for events.

The responder (headwater.runtime.rpc) parses every request into its model (a malformed one gets
an error reply naming the field) and sends the reply model; callers (the CLI's client, the
lineage-indexer, the change-detector) parse the reply into its model. `tests/unit/test_rpc.py`
fails when a service answers a query that is not in the table, or the table names one that no
service answers.

Names: inside the code a partition key is `partition_key`; on the wire, where the CLI's JSON
and the requests always said `partition`, the field keeps that name (a pydantic alias).

Environments: a query about definitions or partitions takes an optional `env` (prod when it is
absent, so prod's requests are as they were); `promote`, `envs` and both `drop_env` are the
environments' own queries.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel

from headwater.contracts.code import PROD_ENV, DatasetDefinition
from headwater.contracts.errors import InputError
from headwater.contracts.keys import validate_env_name
from headwater.contracts.partitions import InputRef
from headwater.contracts.states import PartitionState, TaskState
from headwater.contracts.subjects import Subjects


# Callers and services ship together, so both sides close their models to unknown fields (as
# events do): a field one side sends and the other does not know is an error, never a key
# silently dropped from what the CLI prints. A field whose wire name differs (`partition`) is
# built by its name in code and travels by its alias.
class Request(BaseModel):
    """A query's request: closed to unknown fields."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Reply(BaseModel):
    """A query's reply, or a part of one. Timestamps stay `datetime`: the responder writes
    them as Python prints them (`2024-05-01 10:00:00+00:00`), as the CLI's JSON always had."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


def _absent_if_none(value: object) -> bool:
    return value is None


# Checks that word their reason as the queries always did (the CLI shows it). Raised inside
# validation, the error's reason is kept and the field is where pydantic found it.
def _whole(low: int, high: int, noun: str = "a whole number") -> BeforeValidator:
    def check(value: object) -> object:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InputError("value", f"must be {noun} from {low} to {high}")
        return value

    return BeforeValidator(check)


def _flag(value: object) -> object:
    if not isinstance(value, bool):
        raise InputError("value", "must be true or false")
    return value


_STATE_NAMES = frozenset(s.value for s in PartitionState)


def _states(value: object) -> object:
    if value is not None and (
        not isinstance(value, list) or not all(v in _STATE_NAMES for v in value)
    ):
        raise InputError("value", f"must be a list of {', '.join(PartitionState)}")
    return value


def _zoned(value: object) -> object:
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    try:
        since = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        since = None
    if since is None or since.tzinfo is None:
        raise InputError("value", f"must be an ISO 8601 time with a zone, not {value!r}")
    return since


def _env_name(value: object) -> object:
    if not isinstance(value, str):
        raise InputError("value", "must be an environment name")
    return validate_env_name(value)


Flag = Annotated[bool, BeforeValidator(_flag)]
# An environment's name (headwater.contracts.keys.ENV_NAME_PATTERN).
EnvName = Annotated[str, BeforeValidator(_env_name)]


def _is_prod(value: object) -> bool:
    return value == PROD_ENV


# The environment a query is about: prod when absent, and left out when prod, so that prod's
# requests travel as they did before environments.
InEnv = Annotated[str, BeforeValidator(_env_name), Field(exclude_if=_is_prod)]


# --- spec-registry ----------------------------------------------------------------------


class PipelineDocument(Request):
    """`apply` and `plan`: a spec as it travels to spec-registry, the YAML text and the files
    it names (path -> text)."""

    file: str
    yaml_text: str
    files: dict[str, str] = {}


class SpecRequest(PipelineDocument):
    """`apply` and `plan`: the document, for environment `env` (prod by default; another is
    created as a view of prod's definitions on its first apply)."""

    env: InEnv = PROD_ENV

    def document(self) -> PipelineDocument:
        """The spec as it is stored, without the environment it was applied to."""
        return PipelineDocument(file=self.file, yaml_text=self.yaml_text, files=self.files)


class SourceColumn(Reply):
    """One input column an output column is computed from."""

    dataset: str
    column: str


class OutputColumn(Reply):
    """One output column: the input columns it comes from (none for a constant or
    `count(*)`), its expression (qualified SQL, comments and formatting left out), and what
    could not be resolved (`unresolved`: None when nothing)."""

    name: str
    sources: tuple[SourceColumn, ...] = ()
    expression: str = ""
    unresolved: str | None = None


class DatasetColumns(Reply):
    """`columns`: a dataset's output columns and where each comes from. `columns` is None
    when they are unknown, and `unknown` says why (a Python transform; SELECT * over an input
    whose columns are unknown). `kind` is the dataset's (source, sql, python)."""

    dataset: str
    kind: str
    columns: tuple[OutputColumn, ...] | None
    unknown: str | None = None

    @property
    def names(self) -> list[str] | None:
        return None if self.columns is None else [c.name for c in self.columns]


class ColumnChanges(Reply):
    """Which output columns a change touches; `unknown` says why they cannot be compared."""

    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    unknown: str | None = None


class SpecChange(Reply):
    """What an apply (or a plan) does to one dataset. `columns` is present for an added or
    changed dataset, and wherever its columns moved without a code change."""

    dataset: str
    kind: str
    change: Literal["added", "changed", "limits", "unchanged", "removed"]
    previous_code_sha: str | None
    code_sha: str | None
    columns: ColumnChanges | None = Field(default=None, exclude_if=_absent_if_none)


class ApplyReply(Reply):
    """`apply`: the changes; `spec_version` None when nothing changed (nothing was stored);
    `env` only for an environment (prod's reply is as it always was)."""

    pipeline: str
    spec_version: int | None
    changes: list[SpecChange]
    env: str | None = Field(default=None, exclude_if=_absent_if_none)


class PlanReply(Reply):
    """`plan`: the changes apply would make, and the definitions of the added and changed
    datasets (for the scheduler's `impact`)."""

    pipeline: str
    changes: list[SpecChange]
    definitions: list[DatasetDefinition]


class DatasetsRequest(Request):
    """`datasets`: every applied dataset of environment `env`."""

    env: InEnv = PROD_ENV


class DatasetRecord(Reply):
    """An applied dataset: its pipeline, kind, code SHA and definition."""

    pipeline: str
    kind: str
    code_sha: str
    definition: DatasetDefinition


class DatasetsReply(RootModel[dict[str, DatasetRecord]]):
    """`datasets`: name -> the applied dataset."""

    model_config = ConfigDict(frozen=True)


class ColumnsRequest(Request):
    """`columns`: one dataset's column lineage (as prod applied it)."""

    dataset: str


class EnvRequest(Request):
    """`promote` and spec-registry's `drop_env`: an environment other than prod."""

    env: EnvName


class PromoteReply(Reply):
    """`promote`: prod's definitions that changed (each announced with `promoted_from`), and
    the pipelines applied to the environment."""

    env: str
    changes: list[SpecChange]
    pipelines: list[str]


class EnvsRequest(Request):
    """`envs`: every environment."""


class EnvironmentSummary(Reply):
    """An environment: its datasets, its pipelines, and how many of its definitions differ
    from prod's (by code SHA, or present on one side only)."""

    env: str
    datasets: int
    pipelines: list[str]
    differ: int


class EnvsReply(RootModel[list[EnvironmentSummary]]):
    """`envs`: the environments, prod first."""

    model_config = ConfigDict(frozen=True)


class DroppedDefinitions(Reply):
    """spec-registry's `drop_env`: how many definitions the environment had, and its last spec
    version (what the scheduler ignores events of, up to)."""

    env: str
    datasets: int
    spec_version: int | None


# --- scheduler --------------------------------------------------------------------------


class PartitionRequest(Request):
    """A query about one partition (`why`), as environment `env` sees it."""

    dataset: str
    partition_key: str = Field(alias="partition")
    env: InEnv = PROD_ENV


class PartitionRecord(Reply):
    """A partition as the scheduler holds it. `incomplete` is absent for a derived partition
    that went away (answered from what was kept of it)."""

    dataset: str
    partition_key: str
    state: PartitionState
    fingerprint: str | None = None
    data_sha: str | None = None
    object_key: str | None = None
    rows: int | None = None
    bytes: int | None = None
    desired_fingerprint: str | None = None
    reason: str | None = None
    updated_at: datetime | None = None
    source_version: int | None = None
    incomplete: bool | None = Field(default=None, exclude_if=_absent_if_none)


class PartitionRef(Reply):
    """A partition named by dataset and key."""

    dataset: str
    partition_key: str


class RetractedWas(Reply):
    """What a partition was before it went away."""

    state: PartitionState
    fingerprint: str | None
    data_sha: str | None
    rows: int | None


class Retraction(Reply):
    """When and why a partition went away, which of its inputs went, and what it was."""

    at: datetime
    reason: str | None
    inputs: list[PartitionRef]
    was: RetractedWas


class AttemptError(Reply):
    """One failed attempt of a task: which request and delivery, when, where, and why."""

    request: int
    attempt: int
    error: str
    at: datetime
    executor: str
    traceback: str


class TaskRecord(Reply):
    """The task of a partition's desired fingerprint: `requests` is how many times the
    scheduler asked for it (the first request, then each retry), `attempts` how many times
    its transform ran, `attempt_errors` each failed attempt in the order they ran."""

    fingerprint: str
    dataset: str
    partition_key: str
    state: TaskState
    reason: str | None
    error: str | None
    traceback: str | None
    requested_at: datetime
    finished_at: datetime | None
    sent_at: datetime
    cancel_pending: bool
    env: str  # the environment whose request made it (tasks are shared by fingerprint)
    requests: int
    attempts: int
    attempt_errors: list[AttemptError]


class MaterializationRecord(Reply):
    """One materialization of a partition, and whether it is the current one (in the
    environment asked about). `data_sha_version`: the version its producer hashed the data
    with (None: recorded before it was kept, or a producer that did not say); `env`: the
    environment whose request made it."""

    fingerprint: str
    fingerprint_version: int
    dataset: str
    partition_key: str
    code_sha: str | None
    data_sha: str
    object_key: str
    rows: int
    bytes: int
    inputs: list[InputRef]
    reason: str | None
    duration_ms: float | None
    trace_id: str | None
    created_at: datetime
    damaged: str | None
    cpu_ms: float | None
    data_sha_version: int | None
    env: str
    current: bool


class WhyReply(Reply):
    """`why`: the partition, how it went away (if it did), its task, its materializations."""

    partition: PartitionRecord
    retracted: Retraction | None
    task: TaskRecord | None
    materializations: list[MaterializationRecord]


MAX_CURRENT = 1000  # partitions per `current` request (a reply stays small)


def _pairs(value: object) -> object:
    if (
        not isinstance(value, list)
        or len(value) > MAX_CURRENT
        or not all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(v, str) for v in p)
            for p in value
        )
    ):
        raise InputError("value", f"must be at most {MAX_CURRENT} [dataset, key] pairs")
    return value


class CurrentRequest(Request):
    """`current`: the fingerprint of the current materialization of each partition named."""

    partitions: Annotated[list[tuple[str, str]], BeforeValidator(_pairs)]
    env: InEnv = PROD_ENV


class CurrentFingerprint(Reply):
    dataset: str
    partition_key: str
    fingerprint: str | None


class CurrentReply(RootModel[list[CurrentFingerprint]]):
    """`current`: per partition named, its current fingerprint (None: it does not exist)."""

    model_config = ConfigDict(frozen=True)


class ImpactRequest(Request):
    """`impact`: what applying these definitions would run."""

    datasets: list[DatasetDefinition] = []
    env: InEnv = PROD_ENV


class RunReuse(Reply):
    run: list[str] = []
    reuse: list[str] = []


class ImpactReply(Reply):
    """`impact`: per changed dataset the partitions that would run and those reused;
    `downstream`, per other dataset, the partitions that may run."""

    datasets: dict[str, RunReuse]
    downstream: dict[str, list[str]]


class RetryRequest(Request):
    """`retry`: the errored partitions of a dataset, or one of them."""

    dataset: str
    partition_key: str | None = Field(default=None, alias="partition")


class RetryReply(Reply):
    dataset: str
    retried: list[str]


ERRORED_MAX = 1000  # errored partitions one summary may list


class SummaryRequest(Request):
    """`summary`: counts per dataset and state, and the first `errored` errored partitions."""

    errored: Annotated[int, _whole(0, ERRORED_MAX)] = 20
    env: InEnv = PROD_ENV


class DatasetCounts(Reply):
    """A dataset's partitions per state; `kind` None for rows of a dataset the scheduler has
    no definition of."""

    dataset: str
    kind: str | None
    counts: dict[str, int]
    total: int


class ErroredPartition(Reply):
    dataset: str
    partition_key: str
    error: str | None
    updated_at: datetime


class SummaryReply(Reply):
    datasets: list[DatasetCounts]
    errored: list[ErroredPartition]
    errored_total: int
    tasks_requested: int
    outbox_pending: int


LISTING_MAX = 1000  # rows per `partitions` page


class PartitionsRequest(Request):
    """`partitions`: a page of one dataset's partitions in key order: in `states` (None:
    every state but retracted), changed at or after `since`, after the key `after`, at most
    `limit`; `count` false: `more` only says whether any row follows (1 or 0)."""

    dataset: str = Field(min_length=1)
    states: Annotated[list[PartitionState] | None, BeforeValidator(_states)] = None
    since: Annotated[datetime | None, BeforeValidator(_zoned)] = None
    after: str | None = None
    limit: Annotated[int, _whole(0, LISTING_MAX)] = 50
    count: Flag = True
    env: InEnv = PROD_ENV


class PartitionListing(Reply):
    """One row of a listing."""

    dataset: str
    partition_key: str
    state: PartitionState
    data_sha: str | None
    object_key: str | None
    rows: int | None
    bytes: int | None
    reason: str | None
    fingerprint: str | None
    error: str | None
    desired_fingerprint: str | None
    updated_at: datetime


class PartitionsReply(Reply):
    """`more`: how many match after this page; `next`: the key to pass as `after`."""

    dataset: str
    partitions: list[PartitionListing]
    more: int
    next: str | None


class PendingRequest(Request):
    """`pending`: the work still to do, from counters."""


class PendingReply(Reply):
    tasks_requested: dict[str, int]
    outbox_pending: int
    # Computations held by `settle:` until their inputs stop changing (0 from a scheduler
    # before it counted them).
    settling: int = 0


AFFECTED_SHOWN_MAX = 1000  # keys listed per dataset in one `affected` reply


class AffectedRequest(Request):
    """`affected`: what would run if a partition (or, without a key, every partition) of a
    dataset changed; the first `shown` keys of each dataset."""

    dataset: str = Field(min_length=1)
    partition_key: str | None = Field(default=None, alias="partition")
    shown: Annotated[int, _whole(0, AFFECTED_SHOWN_MAX)] = 20


class AffectedDataset(Reply):
    dataset: str
    kind: str
    count: int
    partitions: list[str]


class AffectedReply(Reply):
    dataset: str
    partition_key: str | None = Field(default=None, alias="partition")
    datasets: list[AffectedDataset]
    total: int


def _spec_version(value: object) -> object:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError("value", "must be the environment's last spec version")
    return value


class DropEnvRequest(Request):
    """The scheduler's `drop_env`: forget environment `env`; events of its spec versions up to
    `spec_version` still in flight are ignored."""

    env: EnvName
    spec_version: Annotated[int, BeforeValidator(_spec_version)]


class DroppedPartitions(Reply):
    """The scheduler's `drop_env`: the partition rows the environment held of its own, the
    tasks cancelled, and `objects`, the data objects nothing else references (the caller
    deletes them)."""

    env: str
    partitions: int
    cancelled: int
    objects: list[str]


# --- lineage-indexer --------------------------------------------------------------------


class LineageRequest(Request):
    """`lineage`: the edges into and out of a partition, to `depth` steps."""

    dataset: str
    partition_key: str = Field(alias="partition")
    depth: Annotated[int, _whole(1, 100, "an integer")] = 20


class LineageEdge(Reply):
    """Input partition -> output partition, made by `fingerprint` with `code_sha`, reached
    at step `depth`."""

    input_dataset: str
    input_key: str
    input_data_sha: str
    output_dataset: str
    output_key: str
    output_data_sha: str
    fingerprint: str
    code_sha: str | None
    depth: int


class LineageReply(Reply):
    dataset: str
    partition_key: str = Field(alias="partition")
    upstream: list[LineageEdge]
    downstream: list[LineageEdge]


class HistoryRequest(Request):
    """`history`: the events of a dataset (of one partition, when given; with
    `code_changes`, the dataset's code changes too)."""

    dataset: str
    partition_key: str | None = Field(default=None, alias="partition")
    code_changes: Flag = False


class HistoryEvent(Reply):
    """One recorded event: `kind` is its family as stored (`partition_landed`), `payload`
    the event as JSON text."""

    event_id: str
    subject: str
    kind: str
    partition_key: str | None
    payload: str
    received_at: datetime


class HistoryReply(RootModel[list[HistoryEvent]]):
    """`history`: the events, oldest first."""

    model_config = ConfigDict(frozen=True)


# --- the table --------------------------------------------------------------------------

Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel, covariant=True)


@dataclass(frozen=True)
class Rpc(Generic[Q, R]):
    """One query: the service that answers it, its verb, request and reply models."""

    service: str
    verb: str
    request: type[Q]
    reply: type[R]
    description: str

    def subject(self, subjects: Subjects) -> str:
        return subjects.rpc(self.service, self.verb)


APPLY = Rpc(
    "spec-registry",
    "apply",
    SpecRequest,
    ApplyReply,
    "validate a spec, store it, announce each dataset whose code SHA changed",
)
PLAN = Rpc("spec-registry", "plan", SpecRequest, PlanReply, "what apply would change, unchanged")
DATASETS = Rpc("spec-registry", "datasets", DatasetsRequest, DatasetsReply, "the applied datasets")
PROMOTE = Rpc(
    "spec-registry", "promote", EnvRequest, PromoteReply, "make an environment's definitions prod's"
)
ENVS = Rpc("spec-registry", "envs", EnvsRequest, EnvsReply, "every environment")
DROP_ENV_DEFINITIONS = Rpc(
    "spec-registry",
    "drop_env",
    EnvRequest,
    DroppedDefinitions,
    "forget an environment's definitions",
)
COLUMNS = Rpc(
    "spec-registry", "columns", ColumnsRequest, DatasetColumns, "a dataset's column lineage"
)
WHY = Rpc("scheduler", "why", PartitionRequest, WhyReply, "a partition and why it is so")
CURRENT = Rpc(
    "scheduler", "current", CurrentRequest, CurrentReply, "current fingerprints of partitions"
)
IMPACT = Rpc("scheduler", "impact", ImpactRequest, ImpactReply, "what new definitions would run")
RETRY = Rpc("scheduler", "retry", RetryRequest, RetryReply, "run errored partitions again")
SUMMARY = Rpc("scheduler", "summary", SummaryRequest, SummaryReply, "counts per dataset and state")
PARTITIONS = Rpc(
    "scheduler", "partitions", PartitionsRequest, PartitionsReply, "a page of one dataset"
)
PENDING = Rpc("scheduler", "pending", PendingRequest, PendingReply, "the work still to do")
AFFECTED = Rpc(
    "scheduler", "affected", AffectedRequest, AffectedReply, "what a change of a partition runs"
)
DROP_ENV_PARTITIONS = Rpc(
    "scheduler",
    "drop_env",
    DropEnvRequest,
    DroppedPartitions,
    "forget an environment's partitions; the objects nothing else references",
)
LINEAGE = Rpc(
    "lineage-indexer", "lineage", LineageRequest, LineageReply, "edges into and out of a partition"
)
HISTORY = Rpc("lineage-indexer", "history", HistoryRequest, HistoryReply, "a partition's events")

RPCS: tuple[Rpc[Any, Any], ...] = (
    APPLY,
    PLAN,
    DATASETS,
    COLUMNS,
    PROMOTE,
    ENVS,
    DROP_ENV_DEFINITIONS,
    WHY,
    CURRENT,
    IMPACT,
    RETRY,
    SUMMARY,
    PARTITIONS,
    PENDING,
    AFFECTED,
    DROP_ENV_PARTITIONS,
    LINEAGE,
    HISTORY,
)


def served_by(service: str) -> tuple[Rpc[Any, Any], ...]:
    """The queries `service` answers."""
    return tuple(r for r in RPCS if r.service == service)
