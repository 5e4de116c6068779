"""A join with one side missing is not invisible (acceptance finding 6): the output partition
that only some inputs have shows as `waiting`, naming the missing input partition; what reads
the join does not wait for it (an `all` rollup computes over the complete days); when the other
side lands it runs, and when a side goes away again it waits again."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("stack", ["local"], indirect=True)]

SPEC = """\
pipeline: joined
sources:
  flights: {}
  weather: {}
datasets:
  delays:
    sql: >
      SELECT f.origin, avg(f.delay) AS delay, max(w.wind) AS wind
      FROM flights f JOIN weather w USING (origin) GROUP BY f.origin
    inputs: {flights: identity, weather: identity}
  year:
    sql: SELECT count(*) AS origins FROM delays
    inputs: {delays: all}
"""


def status_of(stack: RunningStack) -> dict[tuple[str, str], dict[str, Any]]:
    out = json.loads(stack.cli("status", "--json").stdout)
    return {(p["dataset"], p["partition_key"]): p for p in out["partitions"]}


def land(stack: RunningStack, tmp_path: Path, source: str, day: str) -> None:
    csv = tmp_path / f"{source}-{day}.csv"
    if source == "flights":
        csv.write_text("origin,delay\nJFK,10\nLGA,4\n")
    else:
        csv.write_text("origin,wind\nJFK,12\nLGA,7\n")
    stack.cli("publish", source, day, str(csv))


def test_a_join_missing_one_side_waits_visibly_and_its_readers_go_on(
    stack: RunningStack, tmp_path: Path
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC)
    stack.cli("apply", str(spec))
    for day in ("2013-01-01", "2013-01-02"):
        land(stack, tmp_path, "flights", day)
        land(stack, tmp_path, "weather", day)
    land(stack, tmp_path, "weather", "2013-01-03")  # no flights for that day (yet)
    stack.cli("wait")

    held = status_of(stack)
    missing = held[("delays", "2013-01-03")]
    assert missing["state"] == "waiting"
    assert "flights" in missing["reason"]
    assert "2013-01-03" in missing["reason"]
    assert held[("delays", "2013-01-01")]["state"] == "ready"
    # The rollup does not wait for a day that has only one side: it is computed.
    assert held[("year", "all")]["state"] == "ready"
    why = json.loads(stack.cli("why", "delays", "2013-01-03", "--json").stdout)
    assert why["partition"]["state"] == "waiting"
    assert "flights" in why["partition"]["reason"]
    runs = len(json.loads(stack.cli("why", "year", "all", "--json").stdout)["materializations"])

    land(stack, tmp_path, "flights", "2013-01-03")  # the other side arrives: it runs
    stack.cli("wait")
    held = status_of(stack)
    assert held[("delays", "2013-01-03")]["state"] == "ready"
    assert held[("year", "all")]["state"] == "ready"
    ran = json.loads(stack.cli("why", "year", "all", "--json").stdout)
    assert len(ran["materializations"]) == runs + 1  # once more, over three days

    stack.cli(
        "publish", "--delete", "flights", "2013-01-02"
    )  # one side goes: it waits again, visibly
    stack.cli("wait")
    held = status_of(stack)
    assert held[("delays", "2013-01-02")]["state"] == "waiting"
    assert "flights" in held[("delays", "2013-01-02")]["reason"]
    assert held[("year", "all")]["state"] == "ready"
    ran = json.loads(stack.cli("why", "year", "all", "--json").stdout)
    assert len(ran["materializations"]) == runs + 2  # once more, over two days
