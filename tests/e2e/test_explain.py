"""Explanations that stay true, through the CLI of a running stack: `why` counts the runs of a
failing transform and shows its error once; a partition that went away is explained (when,
why, what it was); `lineage` shows the current graph, and with --all its history, marked."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.timeout(240), pytest.mark.parametrize("stack", ["local"], indirect=True)]

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
GONE = DAYS[1]
SPEC = """\
pipeline: explain
sources:
  flights: {}
datasets:
  daily:
    sql: SELECT count(*) AS n, sum(delay) AS total FROM flights
    inputs: {flights: identity}
  weekly:
    sql: SELECT sum(total) AS total FROM daily
    inputs: {daily: {mapping: window, size: 3}}
"""
FAILING_SPEC = """\
pipeline: failing
sources:
  flights: {}
datasets:
  daily:
    python: t.py:daily
    inputs: {flights: identity}
"""
# The message is built when it is raised, so the traceback's source line does not hold it.
FAILING_PY = "def daily(flights):\n    raise ValueError('no flights ' + 'on this day')\n"
ERROR = "ValueError: no flights on this day"


def as_json(stack: RunningStack, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json").stdout)


def land(stack: RunningStack, tmp_path: Path, day: str) -> None:
    csv = tmp_path / f"flights-{day}.csv"
    csv.write_text(f"delay\n{int(day[-2:])}\n5\n")
    stack.cli("publish", "flights", day, str(csv))


def edges(found: list[dict[str, Any]]) -> set[tuple[str, str, bool]]:
    """(input, output, current) of each edge."""
    return {
        (
            f"{e['input_dataset']}/{e['input_key']}",
            f"{e['output_dataset']}/{e['output_key']}",
            e["current"],
        )
        for e in found
    }


async def test_why_counts_every_run_of_a_failing_transform_and_shows_its_error_once(
    stack: RunningStack, tmp_path: Path
) -> None:
    (tmp_path / "failing.yaml").write_text(FAILING_SPEC)
    (tmp_path / "t.py").write_text(FAILING_PY)
    stack.cli("apply", str(tmp_path / "failing.yaml"))
    land(stack, tmp_path, DAYS[0])
    stack.cli("wait")

    # The executor ran it 3 times (HEADWATER_ATTEMPTS' default) for the one request.
    task = as_json(stack, "why", "daily", DAYS[0])["task"]
    assert (task["state"], task["attempts"], task["requests"]) == ("failed", 3, 1)
    assert task["error"] == ERROR
    text = stack.cli("why", "daily", DAYS[0]).stdout
    assert text.count("no flights on this day") == 1, text
    assert f"failed after 3 run(s) over 1 request(s): {ERROR}" in " ".join(text.split())
    assert "raise ValueError" in text  # the traceback is there, without the error again

    # A retry is a second request, run 3 times more: the count is of runs, over both.
    stack.cli("retry", "daily", DAYS[0])
    stack.cli("wait")
    task = as_json(stack, "why", "daily", DAYS[0])["task"]
    assert (task["state"], task["attempts"], task["requests"]) == ("failed", 6, 2)


async def test_a_retracted_partition_is_explained_and_lineage_separates_current_from_history(
    stack: RunningStack, tmp_path: Path
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC)
    stack.cli("apply", str(spec))
    for day in DAYS:
        land(stack, tmp_path, day)
    stack.cli("wait")
    before = {(p["dataset"], p["partition_key"]): p for p in as_json(stack, "status")["partitions"]}
    assert edges(as_json(stack, "lineage", "flights", GONE)["downstream"]) == {
        (f"flights/{GONE}", f"daily/{GONE}", True),
        *((f"daily/{GONE}", f"weekly/{day}", True) for day in DAYS[1:]),
    }

    stack.cli("publish", "--delete", "flights", GONE)
    stack.cli("wait")

    # The source: when and why it went, and what it was.
    why = as_json(stack, "why", "flights", GONE)
    assert why["partition"]["state"] == "retracted"
    assert why["retracted"]["reason"] == "its files were deleted"
    assert why["retracted"]["at"] is not None
    assert why["retracted"]["was"]["data_sha"] == before[("flights", GONE)]["data_sha"]
    assert why["retracted"]["was"]["rows"] == 2

    # What read it went too, and says so (it used to be "not known to the scheduler").
    why = as_json(stack, "why", "daily", GONE)
    assert why["partition"]["state"] == "retracted"
    assert why["retracted"]["reason"] == (
        f"input flights/{GONE} was retracted (its files were deleted)"
    )
    assert why["retracted"]["inputs"] == [{"dataset": "flights", "partition_key": GONE}]
    assert why["retracted"]["was"]["data_sha"] == before[("daily", GONE)]["data_sha"]
    assert why["retracted"]["was"]["fingerprint"] == before[("daily", GONE)]["fingerprint"]
    assert [m["current"] for m in why["materializations"]] == [False]

    why = as_json(stack, "why", "weekly", GONE)
    assert why["retracted"]["reason"] == (
        f"input daily/{GONE} went away, as input flights/{GONE} was retracted"
        " (its files were deleted)"
    )
    was = why["retracted"]["was"]
    assert (was["state"], was["rows"]) == ("ready", 1)
    assert was["data_sha"] == before[("weekly", GONE)]["data_sha"]
    text = " ".join(stack.cli("why", "weekly", GONE).stdout.split())
    assert f"weekly/{GONE}: retracted at " in text
    assert f"it was ready: data {was['data_sha'][:12]}, 1 row(s)" in text

    # Lineage: nothing reads the retracted partition now; --all shows what once did.
    now = as_json(stack, "lineage", "flights", GONE)
    assert now["downstream"] == []
    assert now["not_shown"]["downstream"] == 4
    ever = as_json(stack, "lineage", "flights", GONE, "--all")
    assert edges(ever["downstream"]) == {
        (f"flights/{GONE}", f"daily/{GONE}", False),
        *((f"daily/{GONE}", f"weekly/{day}", False) for day in DAYS[1:]),
    }
    text = stack.cli("lineage", "flights", GONE).stdout
    assert "4 edge(s) of earlier materializations not shown: --all" in " ".join(text.split())

    # weekly/D3 was recomputed without the day that went: its current inputs, then history.
    d3 = DAYS[2]
    now = as_json(stack, "lineage", "weekly", d3)
    assert edges(now["upstream"]) == {
        (f"daily/{DAYS[0]}", f"weekly/{d3}", True),
        (f"daily/{d3}", f"weekly/{d3}", True),
        (f"flights/{DAYS[0]}", f"daily/{DAYS[0]}", True),
        (f"flights/{d3}", f"daily/{d3}", True),
    }
    assert [e["depth"] for e in now["upstream"]] == [1, 1, 2, 2]
    ever = edges(as_json(stack, "lineage", "weekly", d3, "--all")["upstream"])
    assert (f"daily/{GONE}", f"weekly/{d3}", False) in ever
    assert (f"daily/{d3}", f"weekly/{d3}", False) in ever  # its earlier materialization

    # plan: what runs downstream of a change is an upper bound, and says so.
    spec.write_text(SPEC.replace("sum(delay) AS total", "sum(delay) + 0 AS total"))
    plan = " ".join(stack.cli("plan", str(spec)).stdout.split())
    assert (
        "then up to 3 partition(s) of weekly downstream (an upper bound: early cutoff may stop"
        " them)"
    ) in plan
