"""The scheduler keeps each failed attempt of a task (`task attempt failed`, one per attempt,
from whichever executor ran it) for `why`: in the order they ran whatever order they arrive
in, once however often they are delivered, labelled by request, the newest ATTEMPTS_KEPT per
task; an attempt by itself changes no partition. On a real Postgres and nats-server."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from headwater.contracts import (
    CodeChanged,
    Subjects,
    TaskAttemptFailed,
    TaskFailed,
    family_at,
    parse_model,
)
from headwater.contracts.rpc import WHY
from headwater.core import hashing
from headwater.services.scheduler import store
from headwater.services.scheduler.handlers import SchedulerEvent
from tests.fixtures.rpc import answering
from tests.integration.scheduler_harness import (
    definitions,
    scheduler,
    sha,
    source_landed,
    source_sha,
)

pytestmark = pytest.mark.timeout(120)
DAY = "2024-05-01"
FP = hashing.fingerprint(sha("daily"), [("sales", DAY, source_sha(DAY))])
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def attempt_failed(request: int, attempt: int, executor: str = "host-1") -> TaskAttemptFailed:
    return TaskAttemptFailed(
        event_id=f"attempt-failed:{FP}:{request}:{attempt}",
        fingerprint=FP,
        dataset="daily",
        partition_key=DAY,
        request=request,
        attempt=attempt,
        error=f"error of {request}.{attempt}",
        traceback=f"Traceback ...\nValueError: error of {request}.{attempt}\n",
        executor=executor,
        at=T0 + timedelta(minutes=request, seconds=attempt),
    )


async def test_each_failed_attempt_is_kept_in_order_once_and_bounded(
    database: str, nats_url: str, namespace: str
) -> None:
    setup: list[SchedulerEvent] = [
        *(CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d) for d in definitions()),
        source_landed(DAY),
    ]
    async with scheduler(database, nats_url, namespace) as app:
        assert await app.handle(setup) == [None] * len(setup)
        before = await answering(WHY, app.why)({"dataset": "daily", "partition": DAY})
        assert before["partition"]["state"] == "queued"
        assert before["task"]["attempt_errors"] == []
        # The columns `why --json` showed when it returned the rows whole: the task's `env`
        # (whose request made it), the materializations' `data_sha_version` and `env`; not the
        # partition's `env` (the environment is the caller's).
        assert before["task"]["env"] == "prod"
        assert "env" not in before["partition"]
        [landed] = (await answering(WHY, app.why)({"dataset": "sales", "partition": DAY}))[
            "materializations"
        ]
        assert {"data_sha_version", "env", "current"} <= set(landed)
        assert landed["env"] == "prod"

        # Two executors ran it; their reports arrive out of order, one of them twice.
        events: list[SchedulerEvent] = [
            attempt_failed(1, 2, "host-2"),
            attempt_failed(1, 1),
            attempt_failed(1, 2, "host-2"),
        ]
        assert await app.handle(events) == [None] * 3
        why = await answering(WHY, app.why)({"dataset": "daily", "partition": DAY})
        assert why["partition"]["state"] == "queued"  # an attempt alone changes nothing
        assert why["task"]["state"] == "requested"
        assert [
            (a["request"], a["attempt"], a["executor"], a["error"], a["at"])
            for a in why["task"]["attempt_errors"]
        ] == [
            (1, 1, "host-1", "error of 1.1", T0 + timedelta(minutes=1, seconds=1)),
            (1, 2, "host-2", "error of 1.2", T0 + timedelta(minutes=1, seconds=2)),
        ]
        assert why["task"]["attempt_errors"][0]["traceback"].endswith("error of 1.1\n")

        # The last attempt, then the failure: the partition is errored with every attempt kept.
        [error] = await app.handle([attempt_failed(1, 3)])
        assert error is None
        failed = TaskFailed(
            event_id=f"failed:{FP}:1",
            fingerprint=FP,
            dataset="daily",
            partition_key=DAY,
            attempt=3,
            error="error of 1.3",
        )
        assert await app.handle([failed]) == [None]
        why = await answering(WHY, app.why)({"dataset": "daily", "partition": DAY})
        assert why["partition"]["state"] == "errored"
        assert (why["task"]["attempts"], why["task"]["error"]) == (3, "error of 1.3")
        assert [a["attempt"] for a in why["task"]["attempt_errors"]] == [1, 2, 3]

        # Many requests later only the newest ATTEMPTS_KEPT are kept, the oldest gone first.
        kept = store.ATTEMPTS_KEPT
        more = [
            attempt_failed(request, attempt)
            for request in range(2, 2 + kept // 3 + 1)
            for attempt in (1, 2, 3)
        ]
        assert await app.handle(more) == [None] * len(more)
        runs = (await answering(WHY, app.why)({"dataset": "daily", "partition": DAY}))["task"][
            "attempt_errors"
        ]
        everything = [(1, 1), (1, 2), (1, 3), *((e.request, e.attempt) for e in more)]
        assert [(a["request"], a["attempt"]) for a in runs] == everything[-kept:]


async def test_a_task_failed_of_an_earlier_executor_with_retryable_is_still_processed(
    database: str, nats_url: str, namespace: str
) -> None:
    """`TaskFailed.retryable` is retired: a message an executor of the previous version sent
    (in flight at an upgrade, or a dead letter replayed) parses as the scheduler parses what it
    consumes (by its subject's family), and errors the partition like any other."""
    setup: list[SchedulerEvent] = [
        *(CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d) for d in definitions()),
        source_landed(DAY),
    ]
    old = {
        "schema_version": 1,
        "event_id": f"failed:{FP}:1",
        "fingerprint": FP,
        "dataset": "daily",
        "partition_key": DAY,
        "attempt": 3,
        "error": "ValueError: boom",
        "traceback": "Traceback ...\nValueError: boom\n",
        "retryable": False,
        "damaged_input": None,
        "code_sha": sha("daily"),
        "inputs": [],
    }
    family = family_at(Subjects(namespace), Subjects(namespace).task_failed("daily"))
    assert family is not None
    assert family.model is TaskFailed
    event = parse_model(family.model, json.dumps(old).encode())
    assert isinstance(event, TaskFailed)
    async with scheduler(database, nats_url, namespace) as app:
        assert await app.handle(setup) == [None] * len(setup)
        assert await app.handle([event]) == [None]
        why = await answering(WHY, app.why)({"dataset": "daily", "partition": DAY})
        assert why["partition"]["state"] == "errored"
        assert why["task"]["error"] == "ValueError: boom"
        pairs = await answering(WHY, app.why)({"dataset": "pairs", "partition": DAY})
        assert pairs["partition"]["state"] == "blocked"
