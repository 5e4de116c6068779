"""The executor's tasks in flight: up to the limit run at once, and the consumer loop is held
until there is room, so no message is fetched that could not start."""

import asyncio

import pytest

from headwater.services.executor.concurrency import InFlight

pytestmark = pytest.mark.timeout(30)


async def test_tasks_run_at_once_up_to_the_limit_and_the_next_waits_for_room() -> None:
    in_flight = InFlight(2)
    release = asyncio.Event()
    ran: list[int] = []

    async def work(n: int) -> None:
        ran.append(n)
        await release.wait()

    await in_flight.start(work(1))  # room for another: returns at once
    second = asyncio.create_task(in_flight.start(work(2)))
    await asyncio.sleep(0.2)
    assert ran == [1, 2]  # both running at once
    assert not second.done()  # no room: the loop that fetches the next message is held
    release.set()
    await second
    assert in_flight.running() <= 1


async def test_closing_cancels_what_is_in_flight_and_a_failure_frees_its_room() -> None:
    in_flight = InFlight(1)
    began, cancelled = asyncio.Event(), asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("the bus went away")

    async def forever() -> None:
        began.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    await in_flight.start(fails())  # its room comes back though it raised
    started = asyncio.create_task(in_flight.start(forever()))
    await began.wait()
    assert not started.done()  # its one room is taken
    await in_flight.close()
    assert cancelled.is_set()
    await started
    assert in_flight.running() == 0
