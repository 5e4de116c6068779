"""`headwater status` and `wait` without servers: reading --since, checking --state, what the
summary and a listing print (a summary of many partitions fits a terminal), the progress
line of `wait`, and exit codes."""

import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from headwater.contracts.errors import InputError
from headwater.sdk.cli import app
from headwater.sdk.client import Activity
from headwater.sdk.progress import WaitProgress, describe
from headwater.sdk.status import (
    STATES,
    check_states,
    parse_since,
    print_listing,
    print_summary,
)

NOW = datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 2H ", timedelta(hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_since_reads_a_time_ago(text: str, ago: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - ago


def test_since_reads_iso_times_and_dates_in_the_zone_of_now() -> None:
    paris = timezone(timedelta(hours=1))
    now = NOW.astimezone(paris)
    assert parse_since("2024-03-09T10:15:00+00:00", now) == datetime(2024, 3, 9, 10, 15, tzinfo=UTC)
    assert parse_since("2024-03-09T10:15:00Z", now) == datetime(2024, 3, 9, 10, 15, tzinfo=UTC)
    # Without a zone: the zone of `now` (the CLI passes local time).
    assert parse_since("2024-03-09T10:15", now) == datetime(2024, 3, 9, 10, 15, tzinfo=paris)
    assert parse_since("2024-03-09 10:15", now) == datetime(2024, 3, 9, 10, 15, tzinfo=paris)
    assert parse_since("2024-03-09", now) == datetime(2024, 3, 9, tzinfo=paris)
    assert parse_since("2024-03-09", now).tzinfo is not None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday", "cannot read 'yesterday'"),
        ("10", "cannot read '10'"),
        ("10x", "cannot read '10x'"),
        ("-2h", "cannot read '-2h'"),
        ("", "cannot read ''"),
        ("2024-13-01", "cannot read '2024-13-01'"),
        ("2099-01-01", "is in the future"),
    ],
)
def test_since_rejects_what_it_cannot_read_naming_the_field(text: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_since(text, NOW)
    assert caught.value.field == "since"
    assert says in caught.value.reason


def test_states_are_checked_and_running_is_explained() -> None:
    assert check_states(["errored", "blocked", "errored"]) == ["errored", "blocked"]
    with pytest.raises(InputError, match="'done' is not one of ready, waiting"):
        check_states(["done"])
    with pytest.raises(InputError, match="--state queued shows which run"):
        check_states(["running"])


def summary_of(datasets: int, per_state: int, errored_listed: int) -> dict[str, Any]:
    errored = [
        {
            "dataset": "d0",
            "partition_key": f"k{i:06d}",
            "error": f"ValueError: bad row {i}\nsecond line",
            "updated_at": NOW.isoformat(),
        }
        for i in range(errored_listed)
    ]
    return {
        "datasets": [
            {
                "dataset": f"d{n}",
                "kind": "source" if n == 0 else "sql",
                "counts": dict.fromkeys(STATES, per_state),
                "total": per_state * len(STATES),
            }
            for n in range(datasets)
        ],
        "errored": errored,
        "errored_total": per_state * datasets,
        "tasks_requested": per_state * datasets,
        "outbox_pending": 0,
        "running": 4,
        "work_queue": per_state * datasets - 4,
    }


def rendered(fn: Any, *args: Any, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    fn(console, *args)
    return console.export_text()


def test_the_summary_of_many_partitions_fits_a_terminal() -> None:
    text = rendered(print_summary, summary_of(datasets=5, per_state=100_000, errored_listed=20))
    lines = text.splitlines()
    assert len(lines) <= 50, text
    assert "d0 (source)" in text
    assert "3,000,000" in text  # the total of all datasets
    assert "tasks: 500,000 requested; executors run 4, 499,996 wait in the work queue" in text
    assert "errored: 500,000 partition(s)" in text
    # One line per errored partition: its first line, marked when there is more.
    assert sum("ValueError: bad row" in line for line in lines) == 20
    assert "d0/k000003  ValueError: bad row 3 ..." in text
    assert "... and 499,980 more: headwater status DATASET --state errored" in text
    assert "blocked: 500,000 partition(s) wait on errored ones: --state blocked lists them" in text


def test_a_quiet_summary_says_there_is_nothing_to_do() -> None:
    summary = summary_of(datasets=1, per_state=0, errored_listed=0)
    summary.update(tasks_requested=0, running=0, work_queue=0)
    text = rendered(print_summary, summary)
    assert "tasks: none requested (nothing to do)" in text
    assert "errored" not in text.split("\n", 3)[-1]  # only the column header names it
    assert rendered(print_summary, {**summary, "datasets": []}).startswith("no datasets")


def test_a_listing_is_a_line_per_partition_and_says_how_to_see_more() -> None:
    rows = [
        {
            "dataset": "daily",
            "partition_key": f"2024-01-{d:02d}",
            "state": "queued" if d == 2 else "errored" if d == 3 else "ready",
            "rows": 1234 if d == 1 else None,
            "data_sha": "ab" * 32 if d == 1 else None,
            "reason": "a long reason " * 20,
            "error": "ValueError: no\ntraceback" if d == 3 else None,
            "updated_at": NOW.isoformat(),
            "running": d == 2,
            "executor": "host-1" if d == 2 else None,
        }
        for d in (1, 2, 3)
    ]
    listing = {"dataset": "daily", "partitions": rows, "more": 7, "next": "2024-01-03"}
    text = rendered(print_listing, listing, 3, NOW, width=120)
    lines = [line.strip() for line in text.splitlines()]
    assert len([line for line in lines if line.startswith("2024-01-")]) == 3
    assert "running" in next(line for line in lines if line.startswith("2024-01-02"))
    assert "0s ago" in text  # when it changed, before NOW
    assert "ValueError: no ..." in text
    assert "1,234" in text
    assert "abababababab" in text
    assert "7 more: --limit 10 shows them all, --after 2024-01-03 the next page" in text
    empty = {"dataset": "daily", "partitions": [], "more": 0, "next": None}
    assert "daily: no partition matches" in rendered(print_listing, empty, 50)


def activity(requested: dict[str, int], running: int, finished: int, **more: Any) -> Activity:
    return Activity(
        consumers=more.get("consumers", {"executor": running}),
        tasks_requested=requested,
        outbox_pending=more.get("outbox", 0),
        settling=more.get("settling", 0),
        running=running,
        tasks_finished=finished,
    )


def test_the_progress_line_says_what_runs_and_what_is_left() -> None:
    busy = activity({"a": 50, "b": 7, "c": 3, "d": 1}, running=4, finished=100)
    assert describe(busy) == "4 running, 57 queued; left: a 50, b 7, c 3, +1 more"
    settling = activity({}, 0, 0, consumers={"scheduler": 3, "executor": 0}, outbox=2)
    assert describe(settling) == "settling: events to handle: outbox 2, scheduler 3"
    assert describe(activity({}, 0, 0, consumers={})) == "idle"
    assert describe(None) == "a service does not answer: looking again"
    assert not busy.idle
    assert activity({}, 0, 0, consumers={}).idle
    assert busy.counts() == {
        "executor": 4,
        "tasks_requested": 61,
        "outbox_pending": 0,
        "settling": 0,
    }
    # A computation held by `settle:` is work still to do: `wait` waits for it.
    held = activity({}, 0, 0, consumers={}, settling=2)
    assert not held.idle
    assert describe(held) == "2 held until their inputs stop changing (settle:)"
    both = activity({}, 0, 0, consumers={"scheduler": 1}, settling=2)
    assert describe(both) == (
        "settling: events to handle: scheduler 1; 2 held until their inputs stop changing (settle:)"
    )


def test_without_a_terminal_progress_is_a_plain_line_now_and_then() -> None:
    console = Console(width=100, record=True, file=io.StringIO())
    with WaitProgress(console, live=False) as shown:
        shown.update(activity({"a": 5}, 1, 10))
        shown.update(activity({"a": 4}, 1, 11))  # within PLAIN_EVERY_S: not printed
        shown.update(activity({}, 0, 15, consumers={}))  # idle: `wait` says so itself
    assert console.export_text().splitlines() == ["waiting: 0 done, 1 running, 4 queued; left: a 5"]


def test_status_options_are_checked_before_anything_is_asked(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, says in (
        (["status", "--state", "errored"], "--state, --since and --after need a DATASET"),
        (["status", "daily", "--state", "done"], "'done' is not one of"),
        (["status", "daily", "--since", "soon"], "since: cannot read 'soon'"),
        (["status", "daily", "--limit", "0"], "limit: must be at least 1"),
        (["status", "daily", "--all"], "--all and --summary are for the summary"),
    ):
        result = runner.invoke(app, [*args, "--state-dir", str(tmp_path)])
        assert result.exit_code == 2, (args, result.output)
        assert says in " ".join(result.output.split()), (args, result.output)


def test_an_unexpected_error_is_one_line_and_exit_1_unless_debug(tmp_path: Path) -> None:
    # endpoints.json that is not JSON: a failure no handler expects.
    (tmp_path / "endpoints.json").write_text("{not json")
    args = [sys.executable, "-m", "headwater.sdk", "status", "--state-dir", str(tmp_path)]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    assert "unexpected: JSONDecodeError" in plain.stderr
    assert "--debug shows the traceback" in plain.stderr
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=60)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_on_a_terminal_progress_is_a_live_bar_cleared_at_the_end() -> None:
    out = io.StringIO()
    console = Console(width=100, file=out, force_terminal=True)
    with WaitProgress(console, live=True) as shown:
        assert shown._progress is not None
        shown.update(activity({"daily": 40, "weekly": 5}, running=2, finished=100))
        shown.update(activity({"daily": 30, "weekly": 5}, running=2, finished=110))
        shown._progress.refresh()
        shown.update(None)  # a service does not answer: the numbers stay
        shown._progress.refresh()
    drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "10/45 done" in drawn
    assert "2 running, 33 queued; left: daily 30, weekly 5" in drawn
    assert "10/45 done 0:00:00 a service does not answer" in drawn
