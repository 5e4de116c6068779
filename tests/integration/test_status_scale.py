"""`status` at scale: the scheduler's summary and pending replies do not grow with the
partitions held (no partition row in them but the capped errored list), a listing page is its
limit, and the summary of 10,000 partitions prints in a terminal's height. On a real Postgres
and nats-server, with state rows written directly into the scheduler's tables."""

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from rich.console import Console

from headwater.contracts import CodeChanged
from headwater.contracts.errors import InputError
from headwater.contracts.rpc import PARTITIONS, PENDING, SUMMARY
from headwater.sdk.status import print_summary
from headwater.services.scheduler.queries import StatusQueries
from tests.fixtures.rpc import answering
from tests.integration.scheduler_harness import definitions, scheduler, sha

pytestmark = pytest.mark.timeout(180)
DEFINITIONS = definitions()
# Of every 100 partitions of `daily`: 90 ready, 5 errored, 3 queued, 2 blocked; `pairs` waits.
MIX = [("ready", 90), ("errored", 5), ("queued", 3), ("blocked", 2)]


def state_of(i: int) -> str:
    at = i % 100
    for state, n in MIX:
        if at < n:
            return state
        at -= n
    raise AssertionError(i)


async def hold(conn: asyncpg.Connection, start: int, stop: int) -> None:
    """Partitions start..stop of every dataset: `sales` ready, `daily` in the MIX (an errored
    one has its failed task and error, a queued one its requested task), `pairs` waiting;
    every 50th `sales` key retracted, and its `daily` partition gone (a retraction)."""
    keys = [f"k{i:06d}" for i in range(start, stop)]
    rows: list[tuple[str, str, str, str | None, str | None]] = []
    tasks: list[tuple[str, str, str, str, str | None]] = []
    gone: list[tuple[str, str]] = []
    for i, k in zip(range(start, stop), keys, strict=True):
        if i % 50 == 49:
            rows.append(("sales", k, "retracted", None, "its files were deleted"))
            gone.append(("daily", k))
            continue
        rows.append(("sales", k, "ready", sha(f"sales/{k}"), None))
        state = state_of(i)
        fp = sha(f"daily/{k}")
        rows.append(("daily", k, state, fp, "an input errored" if state == "blocked" else None))
        if state == "errored":
            tasks.append((fp, "daily", k, "failed", f"ValueError: bad day {k}\nTraceback ..."))
        elif state == "queued":
            tasks.append((fp, "daily", k, "requested", None))
        rows.append(("pairs", k, "waiting", sha(f"pairs/{k}"), "an input is not ready"))
    await conn.executemany(
        "INSERT INTO scheduler.partitions (dataset, partition_key, state, desired_fingerprint,"
        " reason) VALUES ($1, $2, $3, $4, $5)",
        rows,
    )
    await conn.executemany(
        "INSERT INTO scheduler.tasks (fingerprint, dataset, partition_key, state, error)"
        " VALUES ($1, $2, $3, $4, $5)",
        tasks,
    )
    await conn.executemany(
        "INSERT INTO scheduler.retractions (dataset, partition_key, reason, inputs, state)"
        " VALUES ($1, $2, 'input sales went away', '[]', 'ready')",
        gone,
    )
    await conn.execute("ANALYZE")


def expected(n: int) -> dict[str, dict[str, int]]:
    live = [i for i in range(n) if i % 50 != 49]
    daily = {s: sum(1 for i in live if state_of(i) == s) for s, _ in MIX}
    return {
        "sales": {"ready": len(live), "retracted": n - len(live)},
        "daily": {**daily, "retracted": n - len(live)},
        "pairs": {"waiting": len(live)},
    }


def counts(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {d["dataset"]: {s: n for s, n in d["counts"].items() if n} for d in summary["datasets"]}


def longest_list(value: Any) -> int:
    """The length of the longest list anywhere in a JSON value."""
    if isinstance(value, list):
        return max([len(value), *(longest_list(v) for v in value)])
    if isinstance(value, dict):
        return max([0, *(longest_list(v) for v in value.values())])
    return 0


async def test_the_summary_does_not_grow_with_partitions_held_and_fits_a_terminal(
    database: str, nats_url: str, namespace: str
) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in DEFINITIONS:
            await app.on_code_changed(
                CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)
            )
        queries = StatusQueries(app.res)
        summary_of = answering(SUMMARY, queries.summary)
        pending_of = answering(PENDING, queries.pending)
        partitions_of = answering(PARTITIONS, queries.partitions)
        sizes = {}
        for held in (1_000, 10_000):
            async with app.res.pool.acquire() as conn:
                await hold(conn, 1_000 if held == 10_000 else 0, held)
            summary = await summary_of({})
            pending = await pending_of({})
            assert counts(summary) == expected(held)
            assert summary["errored_total"] == expected(held)["daily"]["errored"]
            assert summary["tasks_requested"] == expected(held)["daily"]["queued"]
            assert pending["tasks_requested"] == {"daily": expected(held)["daily"]["queued"]}
            # No list of partitions in either reply but the errored ones, capped at 20.
            assert longest_list(summary) == 20
            assert longest_list(pending) == 0
            assert [e["partition_key"] for e in summary["errored"]][:2] == ["k000090", "k000091"]
            assert summary["errored"][0]["error"].startswith("ValueError: bad day k000090")
            sizes[held] = len(json.dumps(summary, default=str))

            # What `headwater status` prints of it (the client adds the work queue's counts).
            console = Console(width=100, record=True, file=io.StringIO())
            print_summary(console, {**summary, "running": 3, "work_queue": 12})
            text = console.export_text()
            assert len(text.splitlines()) <= 50, text
            assert f"errored: {summary['errored_total']:,} partition(s)" in text
        # Ten times the partitions: the same reply, but for wider numbers.
        assert abs(sizes[10_000] - sizes[1_000]) < 100, sizes
        assert sizes[10_000] < 8_000

        # A listing page is its limit, with how many more match.
        page = await partitions_of({"dataset": "daily", "states": ["errored"], "limit": 50})
        errored = expected(10_000)["daily"]["errored"]
        assert len(page["partitions"]) == 50
        assert page["more"] == errored - 50
        assert page["next"] == page["partitions"][-1]["partition_key"]
        rest = await partitions_of(
            {"dataset": "daily", "states": ["errored"], "after": page["next"], "limit": 1000}
        )
        assert len(rest["partitions"]) == errored - 50
        assert (rest["more"], rest["next"]) == (0, None)
        keys = [p["partition_key"] for p in page["partitions"] + rest["partitions"]]
        assert keys == sorted(keys)
        assert len(set(keys)) == errored
        # Without counting (reading every page), `more` says only whether a row follows.
        body = {"dataset": "daily", "states": ["errored"], "limit": 50, "count": False}
        assert (await partitions_of(body))["more"] == 1
        body["after"] = keys[-2]
        last = await partitions_of(body)
        assert ([p["partition_key"] for p in last["partitions"]], last["more"]) == (keys[-1:], 0)
        gone = await partitions_of({"dataset": "daily", "states": ["retracted"]})
        assert gone["partitions"][0]["partition_key"] == "k000049"
        assert gone["partitions"][0]["reason"] == "input sales went away"
        assert gone["more"] == expected(10_000)["daily"]["retracted"] - 50
        # Changed since: everything was written just now, nothing an hour from now.
        hour = timedelta(hours=1)
        since = {"dataset": "pairs", "since": (datetime.now(UTC) - hour).isoformat()}
        assert (await partitions_of(since))["more"] == expected(10_000)["pairs"]["waiting"] - 50
        since["since"] = (datetime.now(UTC) + hour).isoformat()
        assert (await partitions_of(since))["partitions"] == []


async def test_listing_input_is_checked(database: str, nats_url: str, namespace: str) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in DEFINITIONS:
            await app.on_code_changed(
                CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)
            )
        queries = StatusQueries(app.res)
        summary_of = answering(SUMMARY, queries.summary)
        partitions_of = answering(PARTITIONS, queries.partitions)
        for body, field in (
            ({}, "dataset"),
            ({"dataset": "nope"}, "dataset"),
            ({"dataset": "daily", "states": ["done"]}, "states"),
            ({"dataset": "daily", "states": "errored"}, "states"),
            ({"dataset": "daily", "since": "2024-01-01T00:00"}, "since"),  # no zone
            ({"dataset": "daily", "since": "yesterday"}, "since"),
            ({"dataset": "daily", "limit": 1001}, "limit"),
            ({"dataset": "daily", "limit": True}, "limit"),
            ({"dataset": "daily", "after": 3}, "after"),
            ({"dataset": "daily", "count": 1}, "count"),
        ):
            with pytest.raises(InputError) as caught:
                await partitions_of(body)
            assert caught.value.field == field, (body, caught.value)
        with pytest.raises(InputError, match="errored: must be a whole number from 0 to 1000"):
            await summary_of({"errored": -1})
        empty = await partitions_of({"dataset": "daily"})
        assert empty == {"dataset": "daily", "partitions": [], "more": 0, "next": None}
