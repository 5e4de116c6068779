"""Explanations that stay true, through the CLI of a running stack: `why` counts the runs of a
failing transform and shows each run's error, once; a partition that went away is explained
(when, why, what it was); `lineage` shows the current graph, and with --all its history, marked."""

import json
import re
from datetime import datetime
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
    timeout: 3
"""
# Each run fails its own way, counted in a file: run 2 outlives the timeout (its worker is
# killed), run 8 succeeds, the others raise. Messages are built when raised, so no traceback line holds one.
FAILING_PY = """\
import time
from pathlib import Path

RUNS = Path(%r)


def daily(flights):
    run = int(RUNS.read_text()) + 1 if RUNS.exists() else 1
    RUNS.write_text(str(run))
    if run == 2:
        time.sleep(60)
    if run == 8:
        return flights
    raise ValueError('run ' + str(run) + ' found no flights')
"""


def run_error(run: int) -> str:
    return f"ValueError: run {run} found no flights"


TIMEOUT = "timed out after 3s"


def as_json(stack: RunningStack, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json").stdout)


def land(stack: RunningStack, tmp_path: Path, day: str) -> None:
    csv = tmp_path / f"flights-{day}.csv"
    csv.write_text(f"delay\n{int(day[-2:])}\n5\n")
    stack.cli("publish", "flights", day, str(csv))


def attempt_lines(text: str) -> list[str]:
    """The lines of `why` that show one attempt each."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith("request ")]


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


async def test_why_shows_every_run_of_a_failing_transform_with_its_own_error(
    stack: RunningStack, tmp_path: Path
) -> None:
    (tmp_path / "failing.yaml").write_text(FAILING_SPEC)
    (tmp_path / "t.py").write_text(FAILING_PY % str(tmp_path / "runs"))
    stack.cli("apply", str(tmp_path / "failing.yaml"))
    land(stack, tmp_path, DAYS[0])
    stack.cli("wait")

    # The executor ran it 3 times (HEADWATER_ATTEMPTS' default) for the one request, and each
    # run's error is kept: the timeout that killed its worker too.
    task = as_json(stack, "why", "daily", DAYS[0])["task"]
    assert (task["state"], task["attempts"], task["requests"]) == ("failed", 3, 1)
    assert task["error"] == run_error(3)
    runs = task["attempt_errors"]
    assert [(a["request"], a["attempt"], a["error"]) for a in runs] == [
        (1, 1, run_error(1)),
        (1, 2, TIMEOUT),
        (1, 3, run_error(3)),
    ]
    times = [datetime.fromisoformat(a["at"]) for a in runs]
    assert times == sorted(times)
    assert all(re.fullmatch(r".+-\d+", a["executor"]) for a in runs)  # host-pid
    assert "raise ValueError" in runs[0]["traceback"]
    assert runs[1]["traceback"] == ""  # the worker was killed: no traceback
    text = stack.cli("why", "daily", DAYS[0]).stdout
    assert "failed after 3 run(s) over 1 request(s):" in " ".join(text.split())
    # One line per attempt, and each error once: the final one is not repeated.
    assert attempt_lines(text) == [
        f"request 1 attempt {a['attempt']} at {a['at']} on {a['executor']}: {a['error']}"
        for a in runs
    ]
    for a in runs:
        assert text.count(a["error"]) == 1, text
    assert "raise ValueError" in text  # the final traceback is there, without the error again
    assert as_json(stack, "dlq") == []  # no service rejected the attempts' events

    # A retry is a second request, run 3 times more: the runs of both requests are counted and
    # kept, each labelled with its request.
    stack.cli("retry", "daily", DAYS[0])
    stack.cli("wait")
    task = as_json(stack, "why", "daily", DAYS[0])["task"]
    assert (task["state"], task["attempts"], task["requests"]) == ("failed", 6, 2)
    assert [(a["request"], a["attempt"], a["error"]) for a in task["attempt_errors"]] == [
        (1, 1, run_error(1)),
        (1, 2, TIMEOUT),
        (1, 3, run_error(3)),
        (2, 1, run_error(4)),
        (2, 2, run_error(5)),
        (2, 3, run_error(6)),
    ]
    text = stack.cli("why", "daily", DAYS[0]).stdout
    assert "failed after 6 run(s) over 2 request(s):" in " ".join(text.split())
    assert len(attempt_lines(text)) == 6
    for a in task["attempt_errors"]:
        assert text.count(a["error"]) == 1, text

    # A third request fails once, then succeeds: the run that made it counts too.
    stack.cli("retry", "daily", DAYS[0])
    stack.cli("wait")
    why = as_json(stack, "why", "daily", DAYS[0])
    assert why["partition"]["state"] == "ready"
    task = why["task"]
    assert (task["state"], task["attempts"], task["requests"]) == ("succeeded", 8, 3)
    assert [(a["request"], a["attempt"]) for a in task["attempt_errors"]][-1] == (3, 1)


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
