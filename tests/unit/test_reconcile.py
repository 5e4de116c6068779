"""The reconcile decision: from stored facts about input partitions, which output partitions
a derived dataset has, what each reads, and its desired fingerprint (or why it must wait)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import pytest

from headwater.contracts import DatasetDefinition, InputDefinition, InputRef
from headwater.core import hashing
from headwater.core.reconcile import (
    Decision,
    Desired,
    Facts,
    NotReady,
    Output,
    PartitionFact,
    Row,
    Step,
    Task,
    affected_outputs,
    decide,
    decide_keys,
    index_of,
    output_keys,
    topological,
    transition,
)


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


CODE = sha("code v1")
DAYS = ["2013-01-01", "2013-01-02", "2013-01-03", "2013-01-04"]


def inp(dataset: str, mapping: str = "identity", **params: object) -> InputDefinition:
    return InputDefinition.model_validate({"dataset": dataset, "mapping": mapping, **params})


def definition(
    *inputs: InputDefinition, name: str = "out", code_sha: str = CODE
) -> DatasetDefinition:
    return DatasetDefinition(name=name, kind="sql", code_sha=code_sha, inputs=inputs)


def ready(dataset: str, key: str, version: str = "v1") -> PartitionFact:
    return PartitionFact(
        data_sha=sha(f"{dataset}/{key}/{version}"),
        object_key=f"data/{sha(f'{dataset}/{key}/{version}')}.parquet",
        state="ready",
    )


def facts_for(*datasets: str, keys: list[str] = DAYS) -> dict[str, dict[str, PartitionFact]]:
    return {ds: {k: ready(ds, k) for k in keys} for ds in datasets}


def expected_fingerprint(facts: Facts, reads: list[tuple[str, str]], code: str = CODE) -> str:
    return hashing.fingerprint(
        code,
        sorted((ds, key, facts[ds][key].data_sha or "") for ds, key in reads),
    )


def desired(decision: object) -> Desired:
    assert isinstance(decision, Desired), decision
    return decision


def not_ready(decision: object) -> NotReady:
    assert isinstance(decision, NotReady), decision
    return decision


# --------------------------------------------------------------------------------------------
# decide: the desired fingerprint


def test_ready_inputs_give_the_fingerprint_of_code_over_sorted_inputs() -> None:
    d = definition(inp("flights"), inp("weather"))
    facts = facts_for("flights", "weather")
    decision = desired(decide(d, "2013-01-02", facts))
    assert decision.fingerprint == expected_fingerprint(
        facts, [("flights", "2013-01-02"), ("weather", "2013-01-02")]
    )
    assert decision.inputs == (
        InputRef(
            dataset="flights",
            partition_key="2013-01-02",
            data_sha=facts["flights"]["2013-01-02"].data_sha or "",
            object_key=facts["flights"]["2013-01-02"].object_key or "",
        ),
        InputRef(
            dataset="weather",
            partition_key="2013-01-02",
            data_sha=facts["weather"]["2013-01-02"].data_sha or "",
            object_key=facts["weather"]["2013-01-02"].object_key or "",
        ),
    )


def test_fingerprint_does_not_depend_on_input_order() -> None:
    facts = facts_for("flights", "weather", "airports")
    forward = definition(inp("flights"), inp("weather"), inp("airports", "all"))
    backward = definition(inp("airports", "all"), inp("weather"), inp("flights"))
    a = desired(decide(forward, "2013-01-03", facts))
    b = desired(decide(backward, "2013-01-03", facts))
    assert a == b
    assert [(r.dataset, r.partition_key) for r in a.inputs] == sorted(
        (r.dataset, r.partition_key) for r in a.inputs
    )


def test_fingerprint_changes_with_an_input_data_sha() -> None:
    d = definition(inp("flights"), inp("weather"))
    facts = facts_for("flights", "weather")
    before = desired(decide(d, "2013-01-02", facts)).fingerprint
    facts["weather"]["2013-01-02"] = ready("weather", "2013-01-02", "v2")
    after = desired(decide(d, "2013-01-02", facts)).fingerprint
    assert after != before
    # another day's change is not this partition's input
    facts["weather"]["2013-01-03"] = ready("weather", "2013-01-03", "v2")
    assert desired(decide(d, "2013-01-02", facts)).fingerprint == after


def test_fingerprint_changes_with_the_code_sha() -> None:
    facts = facts_for("flights")
    a = desired(decide(definition(inp("flights")), "2013-01-02", facts))
    b = desired(decide(definition(inp("flights"), code_sha=sha("code v2")), "2013-01-02", facts))
    assert a.fingerprint != b.fingerprint
    assert a.inputs == b.inputs


def test_same_facts_give_the_same_fingerprint() -> None:
    d = definition(inp("flights"))
    assert decide(d, "2013-01-02", facts_for("flights")) == decide(
        d, "2013-01-02", facts_for("flights")
    )


def test_window_reads_the_keys_ending_at_its_key() -> None:
    d = definition(inp("flights", "window", size=3))
    facts = facts_for("flights")
    decision = desired(decide(d, "2013-01-04", facts))
    assert [r.partition_key for r in decision.inputs] == DAYS[1:4]
    assert decision.fingerprint == expected_fingerprint(facts, [("flights", k) for k in DAYS[1:4]])
    before = decision.fingerprint
    facts["flights"]["2013-01-01"] = ready("flights", "2013-01-01", "v2")  # outside the window
    assert desired(decide(d, "2013-01-04", facts)).fingerprint == before
    facts["flights"]["2013-01-02"] = ready("flights", "2013-01-02", "v2")  # inside it
    assert desired(decide(d, "2013-01-04", facts)).fingerprint != before


def test_rollup_reads_every_day_of_its_month() -> None:
    keys = ["2013-01-30", "2013-01-31", "2013-02-01"]
    d = definition(inp("flights", "rollup", pattern=r"^(\d{4}-\d{2})-\d{2}"))
    facts = facts_for("flights", keys=keys)
    assert output_keys(d, facts) == {"2013-01", "2013-02"}
    decision = desired(decide(d, "2013-01", facts))
    assert [r.partition_key for r in decision.inputs] == ["2013-01-30", "2013-01-31"]


def test_all_mapping_reads_every_partition_for_the_one_key() -> None:
    d = definition(inp("flights", "all"))
    facts = facts_for("flights")
    assert output_keys(d, facts) == {"all"}
    decision = desired(decide(d, "all", facts))
    assert [r.partition_key for r in decision.inputs] == DAYS
    assert decision.fingerprint == expected_fingerprint(facts, [("flights", k) for k in DAYS])


# --------------------------------------------------------------------------------------------
# decide: waiting and blocked


@pytest.mark.parametrize("state", ["queued", "waiting", "running", "pending"])
def test_input_not_yet_ready_waits(state: str) -> None:
    d = definition(inp("flights"), inp("weather"))
    facts = facts_for("flights", "weather")
    facts["weather"]["2013-01-02"] = PartitionFact(None, None, state)
    decision = not_ready(decide(d, "2013-01-02", facts))
    assert decision.blocked is False
    assert "weather" in decision.reason
    assert "2013-01-02" in decision.reason


def test_missing_input_partition_waits() -> None:
    d = definition(inp("flights"), inp("weather"))
    facts = facts_for("flights", "weather")
    del facts["weather"]["2013-01-02"]
    decision = not_ready(decide(d, "2013-01-02", facts))
    assert decision.blocked is False
    assert "weather" in decision.reason
    assert not_ready(decide(d, "2013-01-02", {"flights": facts["flights"]})).blocked is False


def test_ready_fact_without_a_data_sha_waits() -> None:
    d = definition(inp("flights"))
    facts: Facts = {"flights": {"2013-01-02": PartitionFact(None, None, "ready")}}
    assert not_ready(decide(d, "2013-01-02", facts)).blocked is False


@pytest.mark.parametrize("state", ["errored", "blocked"])
def test_errored_or_blocked_input_blocks(state: str) -> None:
    d = definition(inp("flights"), inp("weather", "window", size=2))
    facts = facts_for("flights", "weather")
    facts["weather"]["2013-01-01"] = PartitionFact(None, None, state)
    decision = not_ready(decide(d, "2013-01-02", facts))  # its window reads 01-01
    assert decision.blocked is True
    assert "weather/2013-01-01" in decision.reason
    assert state in decision.reason
    assert isinstance(decide(d, "2013-01-03", facts), Desired)  # window 01-02..01-03


@pytest.mark.parametrize("state", ["errored", "blocked"])
def test_errored_input_blocks_whatever_the_input_order(state: str) -> None:
    # An output that reads an errored partition is blocked, even if another input is still
    # waiting: the decision must not depend on the order inputs are listed in.
    facts = facts_for("flights", "weather")
    facts["flights"]["2013-01-02"] = PartitionFact(None, None, "queued")
    facts["weather"]["2013-01-02"] = PartitionFact(None, None, state)
    forward = decide(definition(inp("flights"), inp("weather")), "2013-01-02", facts)
    backward = decide(definition(inp("weather"), inp("flights")), "2013-01-02", facts)
    assert not_ready(backward).blocked is True
    assert not_ready(forward).blocked is True


# --------------------------------------------------------------------------------------------
# output_keys and affected_outputs


def test_output_keys_of_identity_inputs_are_their_intersection() -> None:
    d = definition(inp("flights"), inp("weather"))
    facts = {
        **facts_for("flights", keys=DAYS[:3]),
        **facts_for("weather", keys=DAYS[1:]),
    }
    assert output_keys(d, facts) == set(DAYS[1:3])
    assert output_keys(d, {"flights": facts["flights"]}) == set()


def test_output_keys_ignore_all_inputs_when_another_input_partitions() -> None:
    d = definition(inp("flights"), inp("airports", "all"))
    facts = {**facts_for("flights"), **facts_for("airports", keys=["all"])}
    assert output_keys(d, facts) == set(DAYS)


def test_output_keys_of_only_all_inputs_is_one_key_once_every_input_has_data() -> None:
    d = definition(inp("flights", "all"), inp("airports", "all"))
    facts = facts_for("flights", "airports")
    assert output_keys(d, facts) == {"all"}
    assert output_keys(d, {"flights": facts["flights"]}) == set()
    assert output_keys(d, {}) == set()


def test_output_keys_of_window_and_rollup() -> None:
    facts = facts_for("flights")
    assert output_keys(definition(inp("flights", "window", size=3)), facts) == set(DAYS)
    year = inp("flights", "rollup", pattern=r"^(\d{4})-\d{2}-\d{2}")
    assert output_keys(definition(year), facts) == {"2013"}


def test_affected_outputs_follow_each_mapping() -> None:
    facts = facts_for("flights", "weather")
    identity = definition(inp("flights"), inp("weather"))
    assert affected_outputs(identity, "flights", "2013-01-02", facts) == {"2013-01-02"}
    assert affected_outputs(identity, "airports", "2013-01-02", facts) == set()
    window = definition(inp("flights", "window", size=2))
    assert affected_outputs(window, "flights", "2013-01-02", facts) == {"2013-01-02", "2013-01-03"}
    assert affected_outputs(window, "flights", DAYS[-1], facts) == {DAYS[-1]}
    month = definition(inp("flights", "rollup", pattern=r"^(\d{4}-\d{2})-\d{2}"))
    assert affected_outputs(month, "flights", "2013-01-02", facts) == {"2013-01"}
    everything = definition(inp("flights", "all"))
    assert affected_outputs(everything, "flights", "2013-01-02", facts) == {"all"}


def test_affected_outputs_are_exactly_the_outputs_whose_decision_reads_the_input() -> None:
    facts = facts_for("flights", "weather")
    d = definition(inp("flights", "window", size=3), inp("weather"))
    for key in DAYS:
        affected = affected_outputs(d, "flights", key, facts)
        reading = {
            out
            for out in output_keys(d, facts)
            if any(
                r.dataset == "flights" and r.partition_key == key
                for r in desired(decide(d, out, facts)).inputs
            )
        }
        assert affected == reading, key


# --------------------------------------------------------------------------------------------
# topological order


def test_topological_puts_every_dataset_after_its_inputs() -> None:
    defs = [
        definition(inp("flights"), name="daily"),
        definition(inp("daily", "window", size=7), name="weekly"),
        definition(inp("daily", "rollup", pattern=r"^(\d{4}-\d{2})"), name="monthly"),
        definition(inp("weekly"), inp("monthly", "all"), name="report"),
        DatasetDefinition(name="flights", kind="source", code_sha=sha("source")),
    ]
    expected: list[str] | None = None
    for seed in range(5):
        shuffled = defs[:]
        random.Random(seed).shuffle(shuffled)
        order = [d.name for d in topological(shuffled)]
        assert sorted(order) == sorted(d.name for d in defs)
        for d in defs:
            for i in d.inputs:
                assert order.index(i.dataset) < order.index(d.name), (i.dataset, d.name)
        if expected is None:
            expected = order
        assert order == expected  # deterministic whatever the input order


def test_topological_skips_inputs_it_was_not_given() -> None:
    defs = [definition(inp("flights"), name="daily"), definition(inp("daily"), name="weekly")]
    assert [d.name for d in topological(defs)] == ["daily", "weekly"]


# --- the state transition, row by row ---------------------------------------------------------

FP, OLD = sha("fingerprint wanted"), sha("fingerprint before")
WANT = Desired(FP, ())
MADE = Output(data_sha=sha("made"), object_key="data/made.parquet", rows=3, bytes=10)
READY_OLD = Row("ready", OLD, OLD, sha("old data"), "data/old.parquet", 2, 8)


@pytest.mark.parametrize(
    ("row", "decision", "made", "task", "expected"),
    [
        # nothing maps to it any more: it goes; what it asked for is cancelled
        (None, None, None, None, Step(None)),
        (READY_OLD, None, None, None, Step(None, (OLD, "what it read went away"))),
        # an input is not ready: it waits (keeping its last data); errored input: blocked
        (
            None,
            NotReady(False, "a/1 is queued"),
            None,
            None,
            Step(Row("waiting", reason="a/1 is queued")),
        ),
        (
            READY_OLD,
            NotReady(True, "a/1 is errored"),
            None,
            None,
            Step(
                Row(
                    "blocked", OLD, OLD, sha("old data"), "data/old.parquet", 2, 8, "a/1 is errored"
                ),
                (OLD, "not ready: a/1 is errored"),
            ),
        ),
        # already current: nothing to do; current but marked otherwise: ready again
        (Row("ready", FP, FP, "d", "o"), WANT, None, None, Step(Row("ready", FP, FP, "d", "o"))),
        (
            Row("waiting", FP, FP, "d", "o", reason="x"),
            WANT,
            None,
            None,
            Step(Row("ready", FP, FP, "d", "o")),
        ),
        # made before (a revert, early cutoff upstream): adopted, the old task cancelled
        (
            Row("queued", OLD, sha("other"), "d", "o"),
            WANT,
            MADE,
            None,
            Step(
                Row("ready", FP, FP, MADE.data_sha, MADE.object_key, 3, 10),
                (sha("other"), f"superseded by {FP[:12]}"),
            ),
        ),
        # never asked: a new task
        (None, WANT, None, None, Step(Row("queued", desired_fingerprint=FP), None, "new")),
        (
            READY_OLD,
            WANT,
            None,
            None,
            Step(
                Row("queued", OLD, FP, sha("old data"), "data/old.parquet", 2, 8),
                (OLD, f"superseded by {FP[:12]}"),
                "new",
            ),
        ),
        # its task: in flight (nothing new), failed (errored), succeeded but its object is
        # unusable (repair), interrupted (again), cancelled and wanted again (revive)
        (None, WANT, None, Task("requested"), Step(Row("queued", desired_fingerprint=FP))),
        (
            None,
            WANT,
            None,
            Task("failed", "boom"),
            Step(Row("errored", desired_fingerprint=FP, reason="boom")),
        ),
        (
            None,
            WANT,
            None,
            Task("succeeded"),
            Step(Row("queued", desired_fingerprint=FP), None, "repair"),
        ),
        (
            None,
            WANT,
            None,
            Task("interrupted"),
            Step(Row("queued", desired_fingerprint=FP), None, "again"),
        ),
        (
            None,
            WANT,
            None,
            Task("cancelled"),
            Step(Row("queued", desired_fingerprint=FP), None, "revive"),
        ),
    ],
)
def test_transition(
    row: Row | None,
    decision: Decision | None,
    made: Output | None,
    task: Task | None,
    expected: Step,
) -> None:
    assert transition(row, decision, made, task) == expected


def test_a_step_changes_readers_only_when_state_or_data_moves() -> None:
    assert not Step(READY_OLD).changed(READY_OLD)
    assert not Step(replace(READY_OLD, reason="x", desired_fingerprint=FP)).changed(READY_OLD)
    assert Step(replace(READY_OLD, state="queued")).changed(READY_OLD)
    assert Step(replace(READY_OLD, data_sha="new")).changed(READY_OLD)
    assert Step(None).changed(READY_OLD)
    assert Step(READY_OLD).changed(None)
    assert not Step(None).changed(None)


def test_affected_outputs_with_an_index_answers_as_without() -> None:
    window = definition(inp("a", "window", size=3))
    keys = [f"2013-01-{d:02d}" for d in range(1, 20, 2)]
    facts = {"a": {k: ready("a", k) for k in keys}}
    index = index_of(facts, ["a"])
    for key in [*keys, "2012-12-31", "2013-01-04", "2013-01-19", "2013-02-01"]:
        assert affected_outputs(window, "a", key, facts, index) == affected_outputs(
            window, "a", key, facts
        )


def test_a_key_only_some_inputs_have_waits_incomplete_and_one_no_input_has_goes() -> None:
    join = definition(inp("a"), inp("b"))
    facts = {"a": {k: ready("a", k) for k in DAYS}, "b": {k: ready("b", k) for k in DAYS[:2]}}
    decided = decide_keys(join, [*DAYS, "2014-01-01"], facts)
    assert isinstance(decided[DAYS[0]], Desired)
    assert decided[DAYS[2]] == NotReady(False, f"b has no partition for {DAYS[2]}", True)
    assert decided["2014-01-01"] is None
    assert output_keys(join, facts, some=True) == set(DAYS)
    assert output_keys(join, facts) == set(DAYS[:2])


def test_an_incomplete_partition_becomes_whole_again() -> None:
    waits = Row("waiting", OLD, FP, "d", "o", reason="b has no partition", incomplete=True)
    assert transition(READY_OLD, NotReady(False, "b has none", True), None, None).row == replace(
        READY_OLD, state="waiting", reason="b has none", incomplete=True
    )
    step = transition(waits, WANT, MADE, None)
    assert step.row == Row("ready", FP, FP, MADE.data_sha, MADE.object_key, 3, 10)
    assert step.changed(waits)
    # current again without a run (the other side came back as it was): whole, ready
    back = transition(replace(waits, fingerprint=FP), WANT, None, None)
    assert back.row is not None
    assert (back.row.state, back.row.incomplete) == ("ready", False)
    assert back.changed(waits)
