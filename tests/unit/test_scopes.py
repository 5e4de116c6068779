"""Scopes (headwater.core.mappings.Scope): what the scheduler loads for one event instead of
every partition held. A mapping given only the keys its scope asks for (plus any others)
answers exactly as it does given all keys: the property that keeps per-event cost constant
without changing one decision."""

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.mappings import Mapping

DAYS = [f"2024-{m:02d}-{d:02d}" for m in (4, 5, 6) for d in (1, 2, 9, 10, 11, 28, 30)]
MAPPINGS = [
    Mapping(mapping="identity"),
    Mapping(mapping="all"),
    Mapping(mapping="window", size=1),
    Mapping(mapping="window", size=3),
    Mapping(mapping="rollup", to="month"),
    Mapping(mapping="rollup", to="year"),
    Mapping(mapping="rollup", pattern=r"^(\d{4}-\d{2})"),
]
keys = st.sets(st.sampled_from([*DAYS, "2024-05", "2024", "x", "2024-05-01-late"]), max_size=14)


@settings(max_examples=300, deadline=None)
@given(held=keys, other=keys, key=st.sampled_from([*DAYS, "2024-05", "2024", "x"]))
def test_inputs_for_a_key_need_only_its_scope(held: set[str], other: set[str], key: str) -> None:
    for mapping in MAPPINGS:
        loaded = mapping.input_scope(key).select(held) | (other & held)
        assert mapping.inputs_for(key, loaded) == mapping.inputs_for(key, held), mapping
        # Given the keys sorted once (how many keys are decided at a time), the same answer.
        assert mapping.inputs_for(key, held, sorted(held)) == mapping.inputs_for(key, held)
        # Whether the output partition exists is decided from the same keys.
        assert (key in mapping.output_keys(loaded)) == (key in mapping.output_keys(held))


@settings(max_examples=300, deadline=None)
@given(held=keys, other=keys, key=st.sampled_from([*DAYS, "x"]))
def test_affected_outputs_need_only_their_scope(held: set[str], other: set[str], key: str) -> None:
    for mapping in MAPPINGS:
        loaded = mapping.affected_scope(key).select(held) | (other & held) | ({key} & held)
        assert mapping.affected_outputs(key, loaded) == mapping.affected_outputs(key, held)


def test_scopes_are_index_queries_except_for_all_and_patterns() -> None:
    assert Mapping(mapping="identity").input_scope("2024-05-01").exact == {"2024-05-01"}
    assert Mapping(mapping="window", size=7).input_scope("2024-05-08").before == {("2024-05-08", 7)}
    assert Mapping(mapping="rollup", to="month").input_scope("2024-05").prefixes == {"2024-05-"}
    assert Mapping(mapping="all").input_scope("all").everything
    assert Mapping(mapping="window", size=7).affected_scope("2024-05-01").after == {
        ("2024-05-01", 7)
    }
    assert Mapping(mapping="identity").affected_scope("2024-05-01").select(DAYS) == set()
