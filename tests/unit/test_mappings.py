"""Partition mappings: which input partitions an output partition reads (inputs_for), and
which output partitions an input partition feeds (output_key(s), affected_outputs)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from headwater.contracts import InputError, validate_partition_key
from headwater.core.mappings import UNPARTITIONED_KEY, Mapping


def days(start: str, n: int) -> list[str]:
    first = datetime.date.fromisoformat(start)
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range(n)]


DAYS = days("2013-01-01", 6)  # 2013-01-01 .. 2013-01-06
SHUFFLED = [DAYS[3], DAYS[0], DAYS[5], DAYS[1], DAYS[4], DAYS[2]]

WINDOW3 = Mapping(mapping="window", size=3)
MONTH = Mapping(mapping="rollup", to="month")
YEAR = Mapping(mapping="rollup", to="year")
REGION = Mapping(mapping="rollup", pattern=r"^region=([a-z]+),")


# --------------------------------------------------------------------------------------------
# identity


def test_identity_maps_a_key_to_itself() -> None:
    m = Mapping()
    assert m.mapping == "identity"
    assert m.partitions_output
    assert m.output_key("2013-01-02") == "2013-01-02"
    assert m.output_keys(SHUFFLED) == set(DAYS)
    assert m.inputs_for("2013-01-02", SHUFFLED) == ["2013-01-02"]
    assert m.inputs_for("2013-02-01", SHUFFLED) == []
    assert m.affected_outputs("2013-01-02", SHUFFLED) == {"2013-01-02"}


# --------------------------------------------------------------------------------------------
# all


def test_all_feeds_every_input_partition_into_one_output() -> None:
    m = Mapping(mapping="all")
    assert not m.partitions_output
    assert UNPARTITIONED_KEY == "all"
    assert m.output_key("2013-01-02") == UNPARTITIONED_KEY
    assert m.output_keys(SHUFFLED) == {UNPARTITIONED_KEY}
    assert m.output_keys([]) == set()
    assert m.inputs_for(UNPARTITIONED_KEY, SHUFFLED) == DAYS  # sorted
    assert m.affected_outputs("2013-01-04", SHUFFLED) == {UNPARTITIONED_KEY}


# --------------------------------------------------------------------------------------------
# window


def test_window_reads_the_n_keys_ending_at_its_key() -> None:
    assert WINDOW3.partitions_output
    assert WINDOW3.output_keys(SHUFFLED) == set(DAYS)
    assert WINDOW3.inputs_for("2013-01-04", SHUFFLED) == ["2013-01-02", "2013-01-03", "2013-01-04"]
    assert WINDOW3.inputs_for("2013-01-06", SHUFFLED) == ["2013-01-04", "2013-01-05", "2013-01-06"]


def test_window_at_the_start_reads_the_keys_there_are() -> None:
    assert WINDOW3.inputs_for("2013-01-01", SHUFFLED) == ["2013-01-01"]
    assert WINDOW3.inputs_for("2013-01-02", SHUFFLED) == ["2013-01-01", "2013-01-02"]


def test_window_counts_keys_not_calendar_days() -> None:
    sparse = ["2013-01-01", "2013-01-05", "2013-01-20", "2013-02-01"]
    assert WINDOW3.inputs_for("2013-02-01", sparse) == ["2013-01-05", "2013-01-20", "2013-02-01"]


def test_window_of_a_key_that_is_not_an_input_is_empty() -> None:
    assert WINDOW3.inputs_for("2013-01-07", SHUFFLED) == []
    assert WINDOW3.inputs_for("2013-01-03T12", SHUFFLED) == []


def test_window_affected_outputs_are_the_keys_whose_windows_include_it() -> None:
    assert WINDOW3.affected_outputs("2013-01-02", SHUFFLED) == {
        "2013-01-02",
        "2013-01-03",
        "2013-01-04",
    }
    assert WINDOW3.affected_outputs("2013-01-05", SHUFFLED) == {"2013-01-05", "2013-01-06"}
    assert WINDOW3.affected_outputs("2013-01-06", SHUFFLED) == {"2013-01-06"}


def test_window_of_size_one_is_identity() -> None:
    m = Mapping(mapping="window", size=1)
    for key in DAYS:
        assert m.inputs_for(key, SHUFFLED) == [key]
        assert m.affected_outputs(key, SHUFFLED) == {key}


def test_window_larger_than_the_keys_reads_them_all() -> None:
    m = Mapping(mapping="window", size=30)
    assert m.inputs_for(DAYS[-1], SHUFFLED) == DAYS
    assert m.affected_outputs(DAYS[0], SHUFFLED) == set(DAYS)


# --------------------------------------------------------------------------------------------
# rollup


def test_rollup_to_month() -> None:
    keys = ["2013-01-31", "2013-02-01", "2013-01-01", "2013-02-28", "2014-01-15"]
    assert MONTH.output_key("2013-01-31") == "2013-01"
    assert MONTH.output_keys(keys) == {"2013-01", "2013-02", "2014-01"}
    assert MONTH.inputs_for("2013-01", keys) == ["2013-01-01", "2013-01-31"]
    assert MONTH.inputs_for("2013-02", keys) == ["2013-02-01", "2013-02-28"]
    assert MONTH.inputs_for("2013-03", keys) == []
    assert MONTH.affected_outputs("2013-02-28", keys) == {"2013-02"}


def test_rollup_to_year() -> None:
    keys = ["2013-12-31", "2014-01-01", "2013-01-01"]
    assert YEAR.output_key("2013-12-31") == "2013"
    assert YEAR.output_keys(keys) == {"2013", "2014"}
    assert YEAR.inputs_for("2013", keys) == ["2013-01-01", "2013-12-31"]
    assert YEAR.affected_outputs("2014-01-01", keys) == {"2014"}


@pytest.mark.parametrize("mapping", [MONTH, YEAR])
def test_rollup_skips_keys_that_are_not_days(mapping: Mapping) -> None:
    assert mapping.output_key("all") is None
    assert mapping.output_key("13-01-01") is None
    assert mapping.output_keys(["all", "2013-01-01"]) == {mapping.output_key("2013-01-01")}
    assert mapping.affected_outputs("all", ["all"]) == set()


def test_rollup_by_pattern_uses_the_first_capture_group() -> None:
    keys = ["region=eu,day=2013-01-01", "region=us,day=2013-01-01", "region=eu,day=2013-01-02"]
    assert REGION.output_key(keys[0]) == "eu"
    assert REGION.output_key("day=2013-01-01") is None
    assert REGION.output_keys([*keys, "unrelated"]) == {"eu", "us"}
    assert REGION.inputs_for("eu", keys) == ["region=eu,day=2013-01-01", "region=eu,day=2013-01-02"]
    assert REGION.affected_outputs(keys[1], keys) == {"us"}


@pytest.mark.parametrize(
    ("pattern", "key"),
    [(r"^([a-z]*)", "2013-01-01"), (r"^(.*)=", "=eu"), (r"^(\d{4})?-", "-01-01")],
)
def test_rollup_output_keys_are_valid_partition_keys(pattern: str, key: str) -> None:
    # An output partition key becomes an object key: a capture that is empty (or otherwise
    # not a partition key) must not produce an output partition.
    m = Mapping(mapping="rollup", pattern=pattern)
    for out in m.output_keys([key]):
        try:
            validate_partition_key(out)
        except InputError as exc:
            pytest.fail(f"{pattern!r} maps {key!r} to invalid output key {out!r}: {exc.reason}")


# --------------------------------------------------------------------------------------------
# consistency: affected_outputs is the inverse of inputs_for

MAPPINGS = [
    Mapping(),
    Mapping(mapping="all"),
    Mapping(mapping="window", size=1),
    WINDOW3,
    Mapping(mapping="window", size=7),
    MONTH,
    YEAR,
]

day_keys = st.sets(
    st.dates(min_value=datetime.date(2012, 11, 1), max_value=datetime.date(2014, 2, 28)).map(
        lambda d: d.isoformat()
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(keys=day_keys)
def test_affected_outputs_is_the_inverse_of_inputs_for(keys: set[str]) -> None:
    for m in MAPPINGS:
        outputs = m.output_keys(keys)
        for out in outputs:
            reads = m.inputs_for(out, keys)
            assert reads == sorted(reads)
            assert reads, (m, out)  # an output that exists reads something
        for key in keys:
            affected = m.affected_outputs(key, keys)
            assert affected <= outputs, (m, key)
            assert affected == {o for o in outputs if key in m.inputs_for(o, keys)}, (m, key)


# --------------------------------------------------------------------------------------------
# validation and canonical form


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"mapping": "window"}, "size"),
        ({"mapping": "window", "size": 0}, "size"),
        ({"mapping": "window", "size": -3}, "size"),
        ({"mapping": "rollup"}, "exactly one"),
        ({"mapping": "rollup", "to": "month", "pattern": "^(x)"}, "exactly one"),
        ({"mapping": "rollup", "pattern": "(["}, "does not compile"),
        ({"mapping": "rollup", "pattern": "^x"}, "capture group"),
        ({"mapping": "rollup", "to": "week"}, "month"),
        ({"mapping": "daily"}, "identity"),
        ({"mapping": "window", "size": 3, "step": 1}, "Extra inputs"),
    ],
)
def test_invalid_mappings_are_rejected(params: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as info:
        Mapping.model_validate(params)
    assert named in str(info.value)


def test_canonical_form_distinguishes_parameters() -> None:
    forms = {m.canonical() for m in [*MAPPINGS, REGION, Mapping(mapping="window", size=30)]}
    assert len(forms) == len(MAPPINGS) + 2
    assert Mapping(mapping="window", size=3).canonical() == WINDOW3.canonical()


def test_mappings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        WINDOW3.size = 5  # type: ignore[misc]
