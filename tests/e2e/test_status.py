"""`status`, `wait` and `apply --wait` through the CLI of a running stack: the summary counts
each dataset's partitions per state and lists the errored ones with their errors; `status
DATASET` lists partitions narrowed by state and by when they changed, a page at a time;
`--json` of each; a running task shows as running; exit codes for scripts."""

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("stack", ["local"], indirect=True)]

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
BAD = DAYS[2]  # its flights have a negative delay: `daily` raises for it
SPEC = """\
pipeline: status
sources:
  flights: {}
datasets:
  daily:
    python: t.py:daily
    inputs: {flights: identity}
  weekly:
    sql: %s
    inputs: {daily: {mapping: window, size: 2}}
"""
WEEKLY = "SELECT sum(n) AS n FROM daily"
# Once SLOW exists, each failing run first takes a while (so a retry is seen running).
DAILY_PY = """\
import time
from pathlib import Path

import pyarrow as pa

SLOW = Path(%r)


def daily(flights):
    delays = flights.column("delay").to_pylist()
    if min(delays) < 0:
        if SLOW.exists():
            time.sleep(5)
        raise ValueError("negative delay " + str(min(delays)))
    return pa.table({"n": [len(delays)]})
"""
ERROR = "ValueError: negative delay -1"


def as_json(stack: RunningStack, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json").stdout)


def land(stack: RunningStack, tmp_path: Path, day: str) -> None:
    csv = tmp_path / f"flights-{day}.csv"
    csv.write_text(f"delay\n{-1 if day == BAD else 5}\n7\n")
    stack.cli("publish", "flights", day, str(csv))


def counts(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    """dataset -> its non-zero counts."""
    return {d["dataset"]: {s: n for s, n in d["counts"].items() if n} for d in summary["datasets"]}


def keys(listing: dict[str, Any]) -> list[str]:
    return [p["partition_key"] for p in listing["partitions"]]


def test_status_summarises_lists_and_narrows_and_wait_reports_what_is_left(
    stack: RunningStack, tmp_path: Path
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC % WEEKLY)
    (tmp_path / "t.py").write_text(DAILY_PY % str(tmp_path / "slow"))
    stack.cli("apply", str(spec))
    for day in DAYS[:4]:
        land(stack, tmp_path, day)
    stack.cli("wait")
    time.sleep(1)  # the times the rows changed are before `later`, which is before day 5's
    later = datetime.now(UTC)
    time.sleep(1)
    land(stack, tmp_path, DAYS[4])
    waited = stack.cli("wait", "--json")
    assert json.loads(waited.stdout) == {"ready": 12, "errored": 1, "blocked": 2}

    # The summary: a row per dataset in pipeline order, the errored partition with its error.
    summary = as_json(stack, "status", "--summary")
    assert [d["dataset"] for d in summary["datasets"]] == ["flights", "daily", "weekly"]
    assert [d["kind"] for d in summary["datasets"]] == ["source", "python", "sql"]
    assert counts(summary) == {
        "flights": {"ready": 5},
        "daily": {"ready": 4, "errored": 1},
        "weekly": {"ready": 3, "blocked": 2},  # the two windows over the errored day
    }
    assert [(e["dataset"], e["partition_key"], e["error"]) for e in summary["errored"]] == [
        ("daily", BAD, ERROR)
    ]
    assert summary["errored_total"] == 1
    assert (summary["tasks_requested"], summary["outbox_pending"]) == (0, 0)
    assert (summary["running"], summary["work_queue"]) == (0, 0)
    assert "partitions" not in summary
    # Plain --json keeps every partition, as it always had, beside the summary.
    full = as_json(stack, "status")
    assert len(full["partitions"]) == 15
    assert counts(full) == counts(summary)
    assert {p["state"] for p in full["partitions"] if p["dataset"] == "weekly"} == {
        "ready",
        "blocked",
    }

    text = stack.cli("status").stdout
    lines = text.splitlines()
    assert len(lines) < 25, text
    row = next(line.split() for line in lines if line.strip().startswith("daily"))
    assert row == ["daily", "4", "0", "0", "1", "0", "0", "5"], text
    assert "errored: 1 partition(s)" in text
    assert f"daily/{BAD}  {ERROR}" in text
    assert "blocked: 2 partition(s) wait on errored ones" in text
    assert "tasks: none requested (nothing to do)" in text

    # A dataset's partitions, narrowed by state.
    errored = as_json(stack, "status", "daily", "--state", "errored")
    assert keys(errored) == [BAD]
    assert errored["partitions"][0]["error"] == ERROR
    assert (errored["more"], errored["next"]) == (0, None)
    both = as_json(stack, "status", "weekly", "--state", "blocked", "--state", "ready")
    assert keys(both) == DAYS[:2] + DAYS[2:]  # every weekly partition, in key order
    text = stack.cli("status", "weekly", "--state", "blocked").stdout
    shown = [line.split()[:2] for line in text.splitlines() if line.strip().startswith("2024-")]
    assert shown == [[DAYS[2], "blocked"], [DAYS[3], "blocked"]]

    # ... a page at a time, saying how to see more.
    page = as_json(stack, "status", "flights", "--limit", "2")
    assert (keys(page), page["more"], page["next"]) == (DAYS[:2], 3, DAYS[1])
    rest = as_json(stack, "status", "flights", "--limit", "2", "--after", DAYS[1])
    assert (keys(rest), rest["more"], rest["next"]) == (DAYS[2:4], 1, DAYS[3])
    text = stack.cli("status", "flights", "--limit", "2").stdout
    assert f"3 more: --limit 5 shows them all, --after {DAYS[1]} the next page" in text

    # ... and by when they changed: an ISO time, or a time ago.
    for dataset, changed in (("flights", [DAYS[4]]), ("daily", [DAYS[4]]), ("weekly", [DAYS[4]])):
        found = as_json(stack, "status", dataset, "--since", later.isoformat())
        assert keys(found) == changed, (dataset, found)
    assert keys(as_json(stack, "status", "flights", "--since", "1h")) == DAYS
    quiet = stack.cli("status", "flights", "--since", "0s")
    assert "flights: no partition matches" in quiet.stdout

    # Bad input is exit 2, naming the field.
    for args, says in (
        (["status", "nope"], "dataset: no dataset 'nope' (known: daily, flights, weekly)"),
        (["status", "daily", "--since", "later"], "since: cannot read 'later'"),
        (["status", "daily", "--state", "done"], "state: 'done' is not one of"),
    ):
        result = stack.cli(*args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert says in " ".join(result.stderr.split()), (args, result.stderr)

    # `wait --strict` fails (exit 4) while partitions are errored or blocked.
    strict = stack.cli("wait", "--strict", check=False)
    assert strict.returncode == 4, strict.stderr
    assert "1 partition(s) errored, 2 partition(s) blocked" in strict.stderr

    # A retry runs 3 times (5 s each, then 1 s and 2 s of backoff): it is running meanwhile,
    # and a shorter wait times out (exit 3), having said what is left.
    (tmp_path / "slow").touch()
    stack.cli("retry", "daily", BAD)
    running = as_json(stack, "status", "daily", "--state", "queued")
    assert keys(running) == [BAD]
    assert running["partitions"][0]["running"] is True
    assert running["partitions"][0]["executor"]
    assert "running" in stack.cli("status", "daily", "--state", "queued").stdout
    busy = as_json(stack, "status", "--summary")
    assert counts(busy)["daily"] == {"ready": 4, "queued": 1}
    assert busy["tasks_requested"] == 1
    assert busy["running"] + busy["work_queue"] == 1  # held by an executor, or between runs
    short = stack.cli("wait", "--timeout", "1", check=False)
    assert short.returncode == 3, short.stderr
    assert "still busy after 1.0s" in short.stderr
    assert re.search(r"waiting: 0 done, [01] running, [01] queued; left: daily 1\n", short.stderr)
    stack.cli("wait")

    # `apply --wait` runs what the change needs and waits for it.
    spec.write_text(SPEC % "SELECT sum(n) AS n, count(*) AS days FROM daily")
    applied = as_json(stack, "apply", str(spec), "--wait")
    changed = [
        (c["dataset"], c["change"]) for c in applied["changes"] if c["change"] != "unchanged"
    ]
    assert changed == [("weekly", "changed")]
    assert applied["idle"] == {"ready": 12, "errored": 1, "blocked": 2}
    assert counts(as_json(stack, "status", "--summary")) == counts(summary)
