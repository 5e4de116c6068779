"""Partitions with named dimensions (issue 13 item 2): the key grammar, a source's
`partitions:` declaration, mappings per dimension and their index scopes, and the spec rules
that keep a pipeline without dimensions exactly as it was."""

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.contracts import DatasetDefinition, InputError
from headwater.contracts.keys import (
    join_dimensions,
    split_dimensions,
    validate_partition_key,
)
from headwater.core.dimensions import check_key, parse_dimensions
from headwater.core.errors import SpecError
from headwater.core.mappings import DimensionalMapping, Mapping, PartitionMapping
from headwater.core.spec import PipelineDocument, parse_pipeline

DATES = ["2013-01-01", "2013-01-02", "2013-01-05", "2013-01-31", "2013-02-01", "2013-02-03"]
ORIGINS = ["EWR", "JFK", "LGA", "JFK-2"]  # JFK-2: a value another one is a prefix of
KEYS = [join_dimensions([("date", d), ("origin", o)]) for d in DATES for o in ORIGINS]


def per_dim(date: Mapping, origin: Mapping) -> DimensionalMapping:
    return DimensionalMapping(dims=(("date", date), ("origin", origin)))


IDENTITY, ALL = Mapping(), Mapping(mapping="all")
MAPPINGS: list[PartitionMapping] = [
    Mapping(),  # identity on every dimension: the whole key
    per_dim(Mapping(mapping="window", size=2), IDENTITY),
    per_dim(Mapping(mapping="window", size=3), IDENTITY),
    per_dim(Mapping(mapping="rollup", to="month"), IDENTITY),
    per_dim(Mapping(mapping="rollup", to="year"), ALL),
    per_dim(IDENTITY, ALL),
    per_dim(ALL, IDENTITY),
    per_dim(Mapping(mapping="rollup", pattern=r"^(\d{4})"), IDENTITY),
    DimensionalMapping(dims=(("origin", IDENTITY), ("date", Mapping(mapping="window", size=2)))),
]
OUTPUTS = sorted(set().union(*(m.output_keys(KEYS) for m in MAPPINGS)) | {"all", "x"})


def test_keys_join_in_declaration_order_and_stay_in_the_key_alphabet() -> None:
    key = join_dimensions([("date", "2013-01-01"), ("origin", "JFK")])
    assert key == "date=2013-01-01,origin=JFK"
    assert validate_partition_key(key) == key
    assert split_dimensions(key, ["date", "origin"]) == ("2013-01-01", "JFK")
    assert split_dimensions(key, ["origin", "date"]) is None  # the order is part of the key
    assert split_dimensions("2013-01-01", ["date"]) is None
    assert split_dimensions("date=a,b", ["date"]) is None


def test_keys_sort_as_the_tuples_of_their_values() -> None:
    values = [(d, o) for d in DATES for o in ORIGINS]
    by_key = sorted(values, key=lambda v: join_dimensions([("date", v[0]), ("origin", v[1])]))
    assert by_key == sorted(values)


def test_a_declaration_checks_every_dimension_and_names_the_field() -> None:
    dims = parse_dimensions({"date": "daily", "origin": ["EWR", "JFK", "LGA"]})
    assert [d.name for d in dims] == ["date", "origin"]
    assert check_key(dims, "date=2013-01-01,origin=JFK") == ("2013-01-01", "JFK")
    bad = {
        "date=2013-01-01,origin=BOS": "origin='BOS' is not one of its values",
        "date=13-01-01,origin=JFK": "does not match its pattern",
        "2013-01-01": "is not a key of dimensions ['date', 'origin']",
        "origin=JFK,date=2013-01-01": "is not a key of dimensions",
        "date=2013-01-01,origin=J/K": "outside ASCII letters",
    }
    for key, reason in bad.items():
        with pytest.raises(InputError, match="partition") as err:
            check_key(dims, key)
        assert reason in err.value.reason, key
    for raw, field in [
        ({"date": "weekly"}, "partitions.date"),
        ({"origin": ["JFK", "J,FK"]}, "partitions.origin"),
        ({"origin": ["JFK", "JFK"]}, "partitions.origin"),
        ({"date": {"pattern": "(a"}}, "partitions.date.pattern"),
        ({"1date": "daily"}, "partitions"),
        ({}, "partitions"),
    ]:
        with pytest.raises(InputError) as err:
            parse_dimensions(raw)
        assert err.value.field == field, raw


@settings(max_examples=200, deadline=None)
@given(
    held=st.sets(st.sampled_from(KEYS), max_size=20),
    other=st.sets(st.sampled_from(KEYS), max_size=20),
    key=st.sampled_from(OUTPUTS),
)
def test_inputs_for_a_key_need_only_its_scope(held: set[str], other: set[str], key: str) -> None:
    for mapping in MAPPINGS:
        loaded = mapping.input_scope(key).select(held) | (other & held)
        assert mapping.inputs_for(key, loaded) == mapping.inputs_for(key, held), mapping
        assert mapping.inputs_for(key, held, sorted(held)) == mapping.inputs_for(key, held)
        assert (key in mapping.output_keys(loaded)) == (key in mapping.output_keys(held))


@settings(max_examples=200, deadline=None)
@given(
    held=st.sets(st.sampled_from(KEYS), max_size=20),
    other=st.sets(st.sampled_from(KEYS), max_size=20),
    key=st.sampled_from(KEYS),
)
def test_affected_outputs_need_only_their_scope(held: set[str], other: set[str], key: str) -> None:
    for mapping in MAPPINGS:
        loaded = mapping.affected_scope(key).select(held) | (other & held) | ({key} & held)
        assert mapping.affected_outputs(key, loaded) == mapping.affected_outputs(key, held)


@settings(max_examples=200, deadline=None)
@given(held=st.sets(st.sampled_from(KEYS), max_size=24), key=st.sampled_from(KEYS))
def test_affected_outputs_are_the_outputs_that_read_the_key(held: set[str], key: str) -> None:
    """The inverse, checked from the definition: an output is affected by a key exactly when
    its inputs (with the key present) include it."""
    keys = held | {key}
    for mapping in MAPPINGS:
        reading = {o for o in mapping.output_keys(keys) if key in mapping.inputs_for(o, keys)}
        assert mapping.affected_outputs(key, keys) == reading, mapping


def test_a_window_reads_the_n_values_ending_at_its_own_along_one_dimension() -> None:
    w = per_dim(Mapping(mapping="window", size=3), IDENTITY)
    assert w.inputs_for("date=2013-01-05,origin=JFK", KEYS) == [
        "date=2013-01-01,origin=JFK",
        "date=2013-01-02,origin=JFK",
        "date=2013-01-05,origin=JFK",
    ]
    # The other dimensions are fixed: a window is one bounded index look-up.
    (grid,) = w.input_scope("date=2013-01-05,origin=JFK").grids
    assert (grid.like, grid.bound, grid.n) == ("date=%,origin=JFK", "date=2013-01-05,origin=JFK", 3)
    rollup = per_dim(Mapping(mapping="rollup", to="month"), IDENTITY)
    assert rollup.inputs_for("date=2013-02,origin=LGA", KEYS) == [
        "date=2013-02-01,origin=LGA",
        "date=2013-02-03,origin=LGA",
    ]
    (grid,) = rollup.input_scope("date=2013-02,origin=LGA").grids
    assert grid.prefix == "date=2013-02-"  # a range of the index, not every key
    whole = per_dim(IDENTITY, ALL)
    assert whole.output_keys(KEYS) == {f"date={d}" for d in DATES}
    assert whole.inputs_for("date=2013-01-02", KEYS) == sorted(k for k in KEYS if "01-02" in k)
    (grid,) = whole.input_scope("date=2013-01-02").grids
    assert grid.prefix == "date=2013-01-02,origin="
    assert per_dim(ALL, ALL).output_keys(KEYS) == {"all"}


SPEC = """\
pipeline: p
sources:
  flights:
    partitions: {date: daily, origin: [EWR, JFK, LGA]}
  plain: {}
datasets:
  clean:
    sql: SELECT * FROM flights
    inputs: {flights: identity}
  week:
    sql: SELECT * FROM clean
    inputs: {clean: {dimensions: {date: {mapping: window, size: 7}}}}
  monthly:
    sql: SELECT * FROM clean
    inputs: {clean: {dimensions: {date: {mapping: rollup, to: month}, origin: identity}}}
  per_day:
    sql: SELECT * FROM clean
    inputs: {clean: {dimensions: {origin: all}}}
  totals:
    sql: SELECT * FROM per_day
    inputs: {per_day: {mapping: window, size: 2}}
"""


def parse(text: str) -> dict[str, DatasetDefinition]:
    pipeline = parse_pipeline(PipelineDocument(file="p.yaml", yaml_text=text))
    return {n: d.definition() for n, d in pipeline.datasets.items()}


def test_a_spec_maps_each_dimension_and_derives_the_dimensions_of_what_reads_them() -> None:
    defs = parse(SPEC)
    names = {n: [d.name for d in (v.dimensions or ())] for n, v in defs.items()}
    assert names == {
        "flights": ["date", "origin"],
        "plain": [],
        "clean": ["date", "origin"],
        "week": ["date", "origin"],
        "monthly": ["date", "origin"],
        "per_day": ["date"],
        "totals": ["date"],
    }
    week = Mapping.of(defs["week"].inputs[0])
    assert isinstance(week, DimensionalMapping)
    assert week.label() == "date: window 7, origin: identity"  # left out: identity
    # A plain window over a one-dimension input applies to that dimension.
    totals = Mapping.of(defs["totals"].inputs[0])
    assert isinstance(totals, DimensionalMapping)
    assert totals.names == ("date",)
    # Definitions travel and read back as written.
    for d in defs.values():
        assert DatasetDefinition.model_validate_json(d.model_dump_json()) == d


def test_a_spec_without_dimensions_serializes_as_before() -> None:
    defs = parse(SPEC)
    assert "dimensions" not in defs["plain"].model_dump_json()
    assert "dimensions" in defs["flights"].model_dump_json()


def test_declared_dimensions_are_the_source_code() -> None:
    one = parse(SPEC)
    two = parse(SPEC.replace("[EWR, JFK, LGA]", "[EWR, JFK]"))
    assert one["flights"].code_sha != two["flights"].code_sha
    assert one["plain"].code_sha == two["plain"].code_sha
    three = parse(SPEC.replace("window, size: 7", "window, size: 6"))
    assert one["week"].code_sha != three["week"].code_sha
    assert one["monthly"].code_sha == three["monthly"].code_sha


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            (
                "{clean: {dimensions: {date: {mapping: window, size: 7}}}}",
                "{clean: {mapping: window, size: 7}}",
            ),
            "inputs.clean",
            "names the one it applies to",
        ),
        (
            ("{date: {mapping: window, size: 7}}", "{day: {mapping: window, size: 7}}"),
            "inputs.clean.dimensions.day",
            "has no dimension 'day'",
        ),
        (
            (
                "{date: {mapping: window, size: 7}}",
                "{date: {mapping: window, size: 7}, origin: all}",
            ),
            "inputs.clean.dimensions.date",
            "needs identity on every other dimension",
        ),
        (
            ("{per_day: {mapping: window, size: 2}}", "{per_day: identity, clean: identity}"),
            "inputs",
            "the same dimensions",
        ),
        (
            ("{flights: identity}", "{plain: {dimensions: {date: all}}}"),
            "inputs.plain.dimensions",
            "has no dimensions",
        ),
        (
            (
                "{date: {mapping: rollup, to: month}, origin: identity}",
                "{date: {mapping: rollup, to: week}}",
            ),
            "inputs.clean.dimensions.date.to",
            "",
        ),
        (("[EWR, JFK, LGA]", "[EWR, 'J,FK']"), "partitions.origin", "is not ASCII"),
    ],
)
def test_mistakes_name_the_field(change: tuple[str, str], field: str, reason: str) -> None:
    text = SPEC.replace(*change)
    assert text != SPEC
    if "plain: {dimensions" in text:
        text = text.replace("SELECT * FROM flights", "SELECT * FROM plain")
    if "per_day: identity, clean: identity" in text:
        text = text.replace("SELECT * FROM per_day", "SELECT * FROM per_day, clean")
    with pytest.raises(SpecError) as err:
        parse(text)
    assert err.value.field == field, str(err.value)
    assert reason in str(err.value)


def test_the_example_is_unchanged_by_dimensions() -> None:
    """Every code SHA of the shipped example, as before dimensions existed (commit 26808be)."""
    from headwater.sdk.spec_files import read_document

    root = Path(__file__).resolve().parents[2]
    pipeline = parse_pipeline(read_document(root / "examples" / "flights" / "pipeline.yaml"))
    shas = {n: d.code_sha[:12] for n, d in pipeline.datasets.items()}
    assert shas == EXAMPLE_SHAS
    assert not any(d.dimensions for d in pipeline.datasets.values())
    assert list(itertools.chain(*(d.definition().inputs for d in pipeline.datasets.values())))


EXAMPLE_SHAS = {
    "airlines": "02363869a7d8",
    "airports": "aec2006110fa",
    "flights": "70d06bdf1810",
    "flights_clean": "eb77b03ac30a",
    "weather": "5a6c47211b81",
    "weather_daily": "4c0c4af87f36",
    "carrier_delays": "20ff1e271981",
    "carrier_delays_7d": "2c1cdd45c681",
    "carrier_monthly": "406851a104d2",
    "carrier_scorecard": "fd59b3fc6b2a",
}
