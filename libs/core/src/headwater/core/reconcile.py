"""The reconcile decision, as pure functions: for a derived dataset, which output
partitions should exist, what each reads, and its desired fingerprint.

The scheduler feeds it stored facts; the oracle in the tests feeds it a from-scratch run.
"""

from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingT
from dataclasses import dataclass, replace
from typing import Literal

from headwater.contracts import DatasetDefinition, InputRef, PartitionState, TaskState
from headwater.core import hashing
from headwater.core.mappings import UNPARTITIONED_KEY, Mapping, Scope


@dataclass(frozen=True)
class PartitionFact:
    """What is known of one input partition."""

    data_sha: str | None
    object_key: str | None
    state: str  # a PartitionState ("ready" when up to date), or "pending" in a plan


@dataclass(frozen=True)
class Desired:
    """An output partition whose inputs are all ready: its fingerprint and inputs."""

    fingerprint: str
    inputs: tuple[InputRef, ...]


@dataclass(frozen=True)
class NotReady:
    """An output partition that must wait: `blocked` when an input errored; `incomplete`
    when some input has no partition for it (a join with one side missing): it is shown,
    but what reads it does not see it."""

    blocked: bool
    reason: str
    incomplete: bool = False


Decision = Desired | NotReady
Facts = MappingT[str, MappingT[str, PartitionFact]]  # dataset -> partition key -> fact
Index = MappingT[str, Sequence[str]]  # dataset -> its partition keys, sorted


def output_keys(definition: DatasetDefinition, facts: Facts, *, some: bool = False) -> set[str]:
    """The output partitions a derived dataset has, given its inputs' partitions: those every
    input feeds, or with `some`, those at least one input feeds."""
    keys: set[str] | None = None
    for inp in definition.inputs:
        mapping = Mapping.of(inp)
        if not mapping.partitions_output:
            continue
        mapped = mapping.output_keys(facts.get(inp.dataset, {}).keys())
        keys = mapped if keys is None else keys | mapped if some else keys & mapped
    if keys is None:  # every input is `all`: one unpartitioned output, once there is input
        has = any if some else all
        return (
            {UNPARTITIONED_KEY} if has(facts.get(i.dataset) for i in definition.inputs) else set()
        )
    return keys


def decide_keys(
    definition: DatasetDefinition, keys: Iterable[str], facts: Facts, index: Index | None = None
) -> dict[str, Decision | None]:
    """The decision for each of `keys` (None: no input feeds it, so it does not exist); a key
    only some inputs feed waits, `incomplete`, for the others."""
    full = output_keys(definition, facts)
    some = output_keys(definition, facts, some=True)
    out: dict[str, Decision | None] = {}
    for key in keys:
        if key in full:
            out[key] = decide(definition, key, facts, index)
        elif key in some:
            why = reads(definition, key, facts, index)
            reason = why if isinstance(why, str) else "an input has no partition for it"
            out[key] = NotReady(False, reason, incomplete=True)
        else:
            out[key] = None
    return out


def scopes(definition: DatasetDefinition, keys: Iterable[str]) -> dict[str, Scope]:
    """What deciding output partitions `keys` of `definition` needs: per input dataset the
    partitions those keys read (headwater.core.mappings.Scope), and the keys themselves."""
    keys = set(keys)
    out: dict[str, Scope] = {definition.name: Scope(exact=set(keys))}
    for inp in definition.inputs:
        mapping = Mapping.of(inp)
        scope = out.setdefault(inp.dataset, Scope())
        for key in keys:
            scope |= mapping.input_scope(key)
    return out


def affected_scope(
    readers: Iterable[DatasetDefinition], input_dataset: str, input_keys: Iterable[str]
) -> Scope:
    """What `affected_outputs` needs of `input_dataset` to find the readers' partitions that
    read `input_keys`."""
    keys = set(input_keys)
    scope = Scope(exact=set(keys))
    for reader in readers:
        for inp in reader.inputs:
            if inp.dataset == input_dataset:
                for key in keys:
                    scope |= Mapping.of(inp).affected_scope(key)
    return scope


def read_by_every_partition(definition: DatasetDefinition, input_dataset: str) -> bool:
    """Whether every partition of `definition` reads every partition of `input_dataset`: an
    `all` input beside inputs that decide its partitions (a day joined with an unpartitioned
    table). A change there affects every partition, not one keyed like the input's."""
    whole = any(
        i.dataset == input_dataset and not Mapping.of(i).partitions_output
        for i in definition.inputs
    )
    return whole and any(Mapping.of(i).partitions_output for i in definition.inputs)


def affected_outputs(
    definition: DatasetDefinition,
    input_dataset: str,
    input_key: str,
    facts: Facts,
    index: Index | None = None,
) -> set[str]:
    """The output partitions of `definition` that read `input_dataset`/`input_key` through a
    mapping that keys them (see `read_by_every_partition` for the rest). `index` (from
    `index_of`, over the same facts) makes asking for many keys cheap."""
    out: set[str] = set()
    for inp in definition.inputs:
        if inp.dataset == input_dataset:
            keys = facts.get(input_dataset, {}).keys()
            ordered = index.get(input_dataset) if index is not None else None
            out |= Mapping.of(inp).affected_outputs(input_key, keys, ordered)
    return out


def index_of(facts: Facts, datasets: Iterable[str]) -> dict[str, list[str]]:
    """Sorted keys of `datasets`, for deciding many output keys over the same facts."""
    return {d: sorted(facts.get(d, {})) for d in datasets}


def reads(
    definition: DatasetDefinition, key: str, facts: Facts, index: Index | None = None
) -> list[tuple[str, str, PartitionFact]] | str:
    """The input partitions output partition `key` reads, or why it reads none yet."""
    found: list[tuple[str, str, PartitionFact]] = []
    for inp in definition.inputs:
        mapping = Mapping.of(inp)
        partitions = facts.get(inp.dataset, {})
        ordered = index.get(inp.dataset) if index is not None else None
        keys = mapping.inputs_for(key, partitions.keys(), ordered)
        if not keys:
            return f"{inp.dataset} has no partition for {key}"
        found += [(inp.dataset, k, partitions[k]) for k in keys]
    return found


def decide(
    definition: DatasetDefinition, key: str, facts: Facts, index: Index | None = None
) -> Decision:
    """The desired fingerprint of one output partition, or why it cannot have one yet.
    `index` (from `index_of`, over the same facts) makes deciding many keys cheap."""
    reads_or_why = reads(definition, key, facts, index)
    if isinstance(reads_or_why, str):
        return NotReady(False, reads_or_why)
    reads_ = reads_or_why
    # An errored input blocks whatever the order of inputs; otherwise wait for the first.
    for dataset, k, fact in reads_:
        if fact.state in (PartitionState.ERRORED, PartitionState.BLOCKED):
            return NotReady(True, f"{dataset}/{k} is {fact.state}")
    for dataset, k, fact in reads_:
        if fact.state != PartitionState.READY or fact.data_sha is None or fact.object_key is None:
            return NotReady(False, f"{dataset}/{k} is {fact.state}")
    refs = [
        InputRef(dataset=d, partition_key=k, data_sha=f.data_sha, object_key=f.object_key)
        for d, k, f in reads_
        if f.data_sha is not None and f.object_key is not None
    ]
    refs.sort(key=lambda r: (r.dataset, r.partition_key))
    fingerprint = hashing.fingerprint(
        definition.code_sha, [(r.dataset, r.partition_key, r.data_sha) for r in refs]
    )
    return Desired(fingerprint, tuple(refs))


def topological(definitions: Iterable[DatasetDefinition]) -> list[DatasetDefinition]:
    """Definitions ordered so that every dataset comes after its inputs."""
    by_name = {d.name: d for d in definitions}
    order: list[DatasetDefinition] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for inp in by_name[name].inputs:
            visit(inp.dataset)
        order.append(by_name[name])

    for name in sorted(by_name):
        visit(name)
    return order


# --- the state transition of one partition --------------------------------------------------
# The reconciler, applied row by row: given a partition as stored, today's decision for it,
# what is known of the desired fingerprint (a usable materialization, a task), the new row and
# what to do. Pure, so a batch of thousands is decided in memory and written in bulk.


@dataclass(frozen=True)
class Row:
    """A partition as the scheduler stores it (the columns a transition reads or writes)."""

    state: PartitionState
    fingerprint: str | None = None  # of its current materialization
    desired_fingerprint: str | None = None
    data_sha: str | None = None
    object_key: str | None = None
    rows: int | None = None
    bytes: int | None = None
    reason: str | None = None
    incomplete: bool = False  # waits for an input partition that does not exist (NotReady)


@dataclass(frozen=True)
class Output:
    """A usable materialization of a fingerprint (its object was not found damaged)."""

    data_sha: str
    object_key: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class Task:
    """What the scheduler knows of a task: `requested`, `succeeded`, `failed`, `cancelled`
    or `interrupted` (it could not read an input that has since been recomputed)."""

    state: TaskState
    error: str | None = None


# What a transition asks for the desired fingerprint: `new` (a first request), `again` (its
# object is unusable or it was interrupted: computed again), `repair` (as `again`, the
# object was lost or damaged), `revive` (it was cancelled and is wanted again: a revert).
Request = Literal["new", "again", "repair", "revive"]


@dataclass(frozen=True)
class Step:
    """The outcome of one transition."""

    row: Row | None  # the new row (None: the partition goes away, or never existed)
    cancel: tuple[str, str] | None = None  # (fingerprint, reason): no longer wanted
    request: Request | None = None  # a task for the decision's fingerprint

    def changed(self, before: Row | None) -> bool:
        """Whether readers must look again: it appeared, went, or its state or data moved."""
        if before is None or self.row is None:
            return before is not self.row
        seen = (before.state, before.data_sha, before.incomplete)
        return seen != (self.row.state, self.row.data_sha, self.row.incomplete)


def transition(
    row: Row | None, decision: Decision | None, made: Output | None, task: Task | None
) -> Step:
    """One partition's step towards its decision. `decision` None: no input maps to it any
    more (it goes, and what it asked for is cancelled). `made`: the usable materialization
    of the desired fingerprint, if any; `task`: that fingerprint's task, if any."""
    wanted = row.desired_fingerprint if row is not None else None
    if decision is None:
        if row is None:
            return Step(None)
        cancel = (wanted, "what it read went away") if wanted is not None else None
        return Step(None, cancel)
    if isinstance(decision, NotReady):
        cancel = (wanted, f"not ready: {decision.reason}") if wanted is not None else None
        state = PartitionState.BLOCKED if decision.blocked else PartitionState.WAITING
        if row is not None and (row.state, row.incomplete) == (state, decision.incomplete):
            return Step(row, cancel)
        base = row if row is not None else Row(state)
        waits = replace(base, state=state, reason=decision.reason, incomplete=decision.incomplete)
        return Step(waits, cancel)
    fp = decision.fingerprint
    # A task asked for earlier and not wanted now is dropped, not computed: superseded, or
    # its inputs are changing (if they end as they were, early cutoff asks again).
    cancel = (wanted, f"superseded by {fp[:12]}") if wanted not in (None, fp) else None
    base = replace(row, incomplete=False) if row is not None else Row(PartitionState.QUEUED)
    if row is not None and row.fingerprint == fp:
        if row.state == PartitionState.READY and not row.incomplete:
            return Step(row, cancel)
        return Step(
            replace(base, state=PartitionState.READY, desired_fingerprint=fp, reason=None), cancel
        )
    if made is not None:  # computed before (a revert, an unchanged input): reused
        adopted = replace(
            base,
            state=PartitionState.READY,
            fingerprint=fp,
            desired_fingerprint=fp,
            data_sha=made.data_sha,
            object_key=made.object_key,
            rows=made.rows,
            bytes=made.bytes,
            reason=None,
        )
        return Step(adopted, cancel)
    queued = replace(base, state=PartitionState.QUEUED, desired_fingerprint=fp)
    if task is None:
        return Step(queued, cancel, "new")
    if task.state in (TaskState.SUCCEEDED, TaskState.INTERRUPTED):
        # Computed before but its object is unusable (a repair), or it could not read an
        # input that has since been recomputed: sent again.
        return Step(queued, cancel, "repair" if task.state == TaskState.SUCCEEDED else "again")
    if task.state == TaskState.CANCELLED:  # wanted again (a revert, a re-added dataset)
        return Step(queued, cancel, "revive")
    if task.state == TaskState.FAILED:  # waits for `retry` (a fix changes the fingerprint)
        errored = replace(
            base, state=PartitionState.ERRORED, desired_fingerprint=fp, reason=task.error
        )
        return Step(errored, cancel)
    return Step(queued, cancel)  # requested: in flight
