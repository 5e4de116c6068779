"""Limits on spec input: the bounded YAML loader, the size and count limits of parse_pipeline,
and rollup patterns that RE2 runs. Each refusal names the field and the reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from headwater.contracts.rpc import PipelineDocument
from headwater.core.errors import SpecError
from headwater.core.mappings import Mapping
from headwater.core.patterns import MAX_PATTERN_CHARS, PatternError, compile_pattern
from headwater.core.spec import parse_pipeline
from headwater.core.spec_input import SpecLimits, load_yaml, show

LIMITS = SpecLimits()


def bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def doc(yaml_text: str, files: dict[str, str] | None = None) -> PipelineDocument:
    return PipelineDocument(file="p.yaml", yaml_text=yaml_text, files=files or {})


def refusal(yaml_text: str, limits: SpecLimits = LIMITS, **files: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_pipeline(doc(yaml_text, files), limits)
    return info.value


# --------------------------------------------------------------------------------------------
# the YAML loader


def test_alias_bomb_is_refused_where_it_expands() -> None:
    with pytest.raises(SpecError) as info:
        load_yaml("p.yaml", bomb(9), LIMITS)
    err = info.value
    assert err.field is not None
    assert err.field.startswith("a4.")
    assert "aliases expand it past 100000 values" in err.reason
    assert "HEADWATER_SPEC_MAX_YAML_NODES" in err.reason


def test_aliases_within_the_bound_load_as_safe_load_does() -> None:
    text = bomb(3) + "b: {k: &k v, again: *k}\n"
    value = load_yaml("p.yaml", text, LIMITS)
    assert value["a2"] == [[["x"] * 10] * 10] * 10
    assert value["b"] == {"k": "v", "again": "v"}


def test_too_many_values_without_aliases_are_refused() -> None:
    text = "xs: [" + ", ".join("1" for _ in range(200)) + "]\n"
    with pytest.raises(SpecError) as info:
        load_yaml("p.yaml", text, SpecLimits(max_yaml_nodes=100))
    assert info.value.field == "xs.98"
    assert "has more than 100 values" in info.value.reason


@pytest.mark.parametrize("depth", [33, 10_000])
def test_deep_nesting_is_refused_before_it_is_built(depth: int) -> None:
    # 10 000 levels would overflow the recursive composer; the event pass refuses first.
    text = "pipeline: p\nsources:\n  s: {description: " + "[" * depth + "]" * depth + "}\n"
    with pytest.raises(SpecError) as info:
        load_yaml("p.yaml", text, LIMITS)
    assert info.value.field == "sources.s.description" + ".0" * 29
    assert "nests deeper than 32 levels" in info.value.reason


def test_nesting_at_the_bound_loads() -> None:
    value = load_yaml("p.yaml", "[" * 32 + "]" * 32, LIMITS)
    for _ in range(31):
        value = value[0]
    assert value == []


def test_invalid_yaml_is_still_named_as_such() -> None:
    with pytest.raises(SpecError) as info:
        load_yaml("p.yaml", "a: [1, 2\n", LIMITS)
    assert "is not valid YAML" in info.value.reason


def test_show_never_formats_the_whole_value() -> None:
    shared: list[object] = ["x" * 1000] * 10
    for _ in range(30):  # 10**30 values if expanded
        shared = [shared] * 10
    assert len(show(shared)) < 200
    assert len(show("y" * 10**6)) < 100


def test_a_bomb_where_a_value_is_formatted_in_an_error_is_refused_first() -> None:
    err = refusal(bomb(9).replace("a0:", "pipeline: p\nsources:\n  s: {ordered: *a8}\na0:"))
    assert "aliases expand it past" in err.reason
    assert len(str(err)) < 400


# --------------------------------------------------------------------------------------------
# sizes and counts


def test_spec_over_its_byte_limit_is_refused() -> None:
    text = "pipeline: p\nsources:\n  s: {description: '" + "d" * 2000 + "'}\n"
    err = refusal(text, SpecLimits(max_spec_bytes=1000))
    assert err.field is None  # the whole document
    assert f"the spec is {len(text)} bytes, more than the 1000 allowed" in err.reason
    assert "HEADWATER_SPEC_MAX_BYTES" in err.reason


def test_too_many_datasets_are_refused() -> None:
    sources = "".join(f"  s{i}: {{}}\n" for i in range(6))
    err = refusal("pipeline: p\nsources:\n" + sources, SpecLimits(max_datasets=5))
    assert err.field == "datasets"
    assert "declares 6 sources and datasets, more than the 5 allowed" in err.reason


def sql_spec(sql: str) -> str:
    return f"pipeline: p\nsources:\n  s: {{}}\ndatasets:\n  d:\n    sql: {sql}\n    inputs: {{s: all}}\n"


def test_sql_file_over_the_code_limit_is_refused_with_its_dataset() -> None:
    sql = "SELECT 1 AS one FROM s\n" + "-- padding\n" * 200
    err = refusal(sql_spec("d.sql"), SpecLimits(max_code_bytes=1000), **{"d.sql": sql})
    assert (err.dataset, err.field) == ("d", "sql")
    assert f"'d.sql' is {len(sql)} bytes, more than the 1000 allowed" in err.reason


def test_python_file_over_the_code_limit_is_refused_with_its_dataset() -> None:
    source = "def fn(s):\n    return s\n" + "# padding\n" * 200
    text = "pipeline: p\nsources:\n  s: {}\ndatasets:\n  d:\n    python: t.py:fn\n    inputs: {s: all}\n"
    err = refusal(text, SpecLimits(max_code_bytes=1000), **{"t.py": source})
    assert (err.dataset, err.field) == ("d", "python")


def test_inline_sql_over_the_code_limit_is_refused() -> None:
    sql = "'SELECT 1 AS one FROM s" + " " * 2000 + "'"
    err = refusal(sql_spec(sql), SpecLimits(max_code_bytes=1000))
    assert (err.dataset, err.field) == ("d", "sql")
    assert "the SQL is" in err.reason


def test_a_big_file_no_dataset_names_is_refused_by_its_name() -> None:
    err = refusal(
        sql_spec("'SELECT 1 AS one FROM s'"),
        SpecLimits(max_code_bytes=1000),
        **{"extra.sql": "x" * 2000},
    )
    assert err.field == "files.extra.sql"


def test_the_default_limits_accept_an_ordinary_spec() -> None:
    pipeline = parse_pipeline(doc(sql_spec("'SELECT 1 AS one FROM s'")))
    assert list(pipeline.datasets) == ["s", "d"]


# --------------------------------------------------------------------------------------------
# rollup patterns


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^(\w+)-\1$", "does not compile as RE2"),  # backreference
        (r"^(?=(\d+))", "does not compile as RE2"),  # lookahead
        (r"(?<=x)(\d+)", "does not compile as RE2"),  # lookbehind
        ("(" * 3 + "[", "does not compile as RE2"),
        ("(a{1000}){1000}", "does not compile as RE2"),  # a program too big
        ("^(" + "a" * MAX_PATTERN_CHARS + ")", f"at most {MAX_PATTERN_CHARS}"),
        ("^x", "capture group"),
    ],
)
def test_patterns_re2_cannot_run_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason.replace("(", r"\(")):
        compile_pattern(pattern)
    with pytest.raises(ValidationError) as info:
        Mapping(mapping="rollup", pattern=pattern)
    assert info.value.errors()[0]["loc"] == ("pattern",)


@pytest.mark.timeout(30, method="thread")  # a backtracking engine would take hours here
def test_nested_quantifiers_match_in_linear_time_with_the_same_result() -> None:
    m = Mapping(mapping="rollup", pattern=r"^((a+)+)$")
    assert m.output_key("a" * 40 + "!") is None
    assert m.output_key("a" * 40) == "a" * 40
    m = Mapping(mapping="rollup", pattern=r"^(\d+-\d+)(\d|\d)*x")
    assert m.output_key("2024-" + "1" * 60 + "y") is None
    assert m.output_key("2024-01x") == "2024-01"


def test_keys_longer_than_any_partition_key_map_nowhere() -> None:
    m = Mapping(mapping="rollup", pattern=r"^(a+)")
    assert m.output_key("a" * 128) == "a" * 128
    assert m.output_key("a" * 129) is None
