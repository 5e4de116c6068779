"""Column-level lineage (headwater.core.columns) on the example's SQL and in isolation: each
output column's input columns, resolved through SQL datasets in dependency order; what cannot
be resolved is said, not guessed; which output columns a change touches."""

from pathlib import Path

from headwater.core.columns import column_changes, pipeline_columns, sql_columns
from headwater.core.spec import Pipeline, parse_pipeline
from headwater.sdk.spec_files import read_document

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flights"


def example(tmp_path: Path, late: str | None = None) -> Pipeline:
    """The example pipeline, with carrier_delays' `> 15` replaced by `late` if given."""
    if late is None:
        return parse_pipeline(read_document(EXAMPLE / "pipeline.yaml"))
    copy = tmp_path / "flights"
    copy.mkdir()
    (copy / "pipeline.yaml").write_text((EXAMPLE / "pipeline.yaml").read_text())
    (copy / "transforms.py").write_text((EXAMPLE / "transforms.py").read_text())
    (copy / "sql").mkdir()
    for sql in (EXAMPLE / "sql").glob("*.sql"):
        text = sql.read_text()
        if sql.name == "carrier_delays.sql":
            text = text.replace("f.dep_delay > 15", late)
        (copy / "sql" / sql.name).write_text(text)
    return parse_pipeline(read_document(copy / "pipeline.yaml"))


pipeline_columns_cache = pipeline_columns(parse_pipeline(read_document(EXAMPLE / "pipeline.yaml")))


def lineage_of(dataset: str) -> dict[str, set[str]]:
    found = pipeline_columns_cache[dataset]
    assert found.columns is not None
    return {c.name: {f"{s.dataset}.{s.column}" for s in c.sources} for c in found.columns}


def test_sources_have_their_declared_columns_and_python_datasets_none() -> None:
    airlines = pipeline_columns_cache["airlines"]
    assert airlines.names == ["carrier", "name"]
    weather_daily = pipeline_columns_cache["weather_daily"]
    assert weather_daily.columns is None
    assert "Python" in str(weather_daily.unknown)


def test_a_sql_dataset_over_declared_sources() -> None:
    found = lineage_of("flights_clean")
    assert list(found) == [
        *("day", "carrier", "flight", "tailnum", "origin", "dest", "dest_name"),
        *("scheduled_hour", "dep_delay", "arr_delay", "diverted", "air_time", "distance"),
    ]
    assert found["day"] == {"flights.year", "flights.month", "flights.day"}
    assert found["dest_name"] == {"airports.name"}  # through the join on airports.faa
    assert found["diverted"] == {"flights.arr_time"}
    assert found["scheduled_hour"] == {"flights.time_hour"}
    assert all(c.unresolved is None for c in pipeline_columns_cache["flights_clean"].columns or ())


def test_columns_resolve_through_sql_datasets_and_say_what_a_python_input_leaves_unchecked() -> (
    None
):
    found = lineage_of("carrier_delays")
    assert found["day"] == {"flights_clean.day"}
    assert found["late"] == {"flights_clean.dep_delay"}  # the filter reads it
    assert found["flights"] == set()  # count(*): no column
    assert found["precip"] == {"weather_daily.precip"}
    by_name = {c.name: c for c in pipeline_columns_cache["carrier_delays"].columns or ()}
    assert by_name["day"].unresolved is None
    # weather_daily is Python: the SQL names its column, which nothing can check yet.
    assert "weather_daily is a Python dataset" in str(by_name["precip"].unresolved)
    scorecard = lineage_of("carrier_scorecard")
    assert scorecard["airline"] == {"airlines.name"}
    assert scorecard["on_time_share"] == {"carrier_delays.late", "carrier_delays.flights"}
    assert scorecard["rank"] == {
        "carrier_delays.late",
        "carrier_delays.flights",
        "carrier_delays.carrier",
    }
    assert lineage_of("carrier_monthly")["month"] == {"carrier_delays.day"}


def test_select_star_expands_over_known_columns_and_is_unknown_over_unknown_ones() -> None:
    known = sql_columns("d", "SELECT * FROM a", {"a": (["x", "y"], "")})
    assert known.names == ["x", "y"]
    unknown = sql_columns("d", "SELECT * FROM p", {"p": (None, "p is a Python dataset")})
    assert unknown.columns is None
    assert "p (p is a Python dataset)" in str(unknown.unknown)


def test_an_unqualified_column_that_could_come_from_an_unknown_input_is_unresolved() -> None:
    found = sql_columns(
        "d",
        "SELECT a.x, z FROM a JOIN p ON a.x = p.x",
        {"a": (["x"], ""), "p": (None, "p is a Python dataset")},
    )
    assert found.columns is not None
    x, z = found.columns
    assert (x.name, [s.column for s in x.sources], x.unresolved) == ("x", ["x"], None)
    assert z.sources == ()
    assert "cannot tell which input 'z' comes from" in str(z.unresolved)


def test_ctes_and_set_operations_are_followed_to_the_inputs() -> None:
    found = sql_columns(
        "d",
        "WITH c AS (SELECT x + 1 AS q FROM a) SELECT q * 2 AS r, 1 AS one FROM c"
        " UNION ALL SELECT y, 2 FROM a",
        {"a": (["x", "y"], "")},
    )
    assert found.columns is not None
    r, one = found.columns
    assert {s.column for s in r.sources} == {"x", "y"}
    assert one.sources == ()


def test_a_sql_change_touches_only_the_columns_it_changes(tmp_path: Path) -> None:
    before = pipeline_columns_cache["carrier_delays"]
    after = pipeline_columns(example(tmp_path, late="f.dep_delay > 30"))["carrier_delays"]
    changes = column_changes(before, after)
    assert (changes.changed, changes.added, changes.removed) == (["late"], [], [])
    assert "day" in changes.unchanged
    assert changes.unknown is None


def test_comments_and_formatting_touch_no_column(tmp_path: Path) -> None:
    after = pipeline_columns(example(tmp_path, late="f.dep_delay   -- past 15 minutes\n > 15"))[
        "carrier_delays"
    ]
    changes = column_changes(pipeline_columns_cache["carrier_delays"], after)
    assert changes.changed == []


def test_columns_unknown_on_either_side_cannot_be_compared() -> None:
    unknown = sql_columns("d", "SELECT * FROM p", {"p": (None, "p is a Python dataset")})
    known = sql_columns("d", "SELECT x FROM a", {"a": (["x"], "")})
    assert column_changes(unknown, known).unknown == unknown.unknown
    assert column_changes(None, known).unknown is not None
