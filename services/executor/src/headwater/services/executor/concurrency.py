"""Several tasks in flight in one executor process: each message is handed to a task of its own,
and the next message is fetched only once there is room for it, so no message waits in this
process (unheartbeated, while an idle executor could take it) for a slot to free."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

_log = logging.getLogger(__name__)


class InFlight:
    """At most `limit` tasks at once. Its `start` is called by one consumer loop only (a pull
    subscriber fetching one message at a time), which it holds until there is room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._room = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self) -> int:
        """How many tasks are in flight (for logs and tests)."""
        return len(self._tasks)

    async def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task of its own; return once another may start."""
        await self._room.acquire()
        task = asyncio.create_task(self._run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        async with self._room:  # room for the next message: only then is it fetched
            pass

    async def close(self) -> None:
        """Cancel what is in flight (its messages are redelivered after their ack wait)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # `consume` settles every outcome; this is the bus going away
            _log.exception("a task ended without settling its message")
        finally:
            self._room.release()
