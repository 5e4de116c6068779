"""What `wait` (and `apply --wait`) shows while it waits: on a terminal a live bar of the tasks
finished out of those finished and left, with what runs and what is left per dataset; in a
pipe or a log, a plain line now and then. Everything shown comes from counters
(HeadwaterClient.activity): no partition is read."""

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from headwater.sdk.client import Activity

PLAIN_EVERY_S = 10.0  # at most one plain line per this many seconds (when something changed)
SHOWN_DATASETS = 3  # datasets named in "left: ..." (the ones with most left)


def describe(seen: Activity | None) -> str:
    """What runs, what is queued, what is left per dataset (or, when no task is left, what
    the system still settles: events not yet handled)."""
    if seen is None:
        return "a service does not answer: looking again"
    left = sum(seen.tasks_requested.values())
    if not left:
        behind = {n: c for n, c in seen.consumers.items() if c}
        if seen.outbox_pending:
            behind["outbox"] = seen.outbox_pending
        held = f"{seen.settling:,} held until their inputs stop changing (settle:)"
        if not behind:
            return held if seen.settling else "idle"
        events = "settling: events to handle: " + ", ".join(
            f"{n} {c:,}" for n, c in sorted(behind.items())
        )
        return f"{events}; {held}" if seen.settling else events
    running = min(seen.running, left)
    most = sorted(seen.tasks_requested.items(), key=lambda kv: (-kv[1], kv[0]))
    named = ", ".join(f"{n} {c:,}" for n, c in most[:SHOWN_DATASETS] if c)
    if len(most) > SHOWN_DATASETS:
        named += f", +{len(most) - SHOWN_DATASETS} more"
    return f"{running:,} running, {left - running:,} queued; left: {named}"


class WaitProgress:
    """Shows a wait's progress: `update` after every look. `live`: draw a bar on `console`
    (a terminal), cleared at the end; else print a plain line to `console` at most every
    PLAIN_EVERY_S when it changed."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live = live
        self._first: Activity | None = None
        self._last_line = ""
        self._last_at = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> "WaitProgress":
        if self.live:
            # The bar, the counts and the time keep their width; what is left gives way.
            self._progress = Progress(
                SpinnerColumn(),
                BarColumn(bar_width=12),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("done", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(),
                TextColumn(
                    "{task.description}",
                    table_column=Column(
                        no_wrap=True,
                        overflow="ellipsis",
                        max_width=max(10, self.console.width - 42),
                    ),
                ),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("looking ...", total=None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, seen: Activity | None) -> None:
        if seen is not None and self._first is None:
            self._first = seen
        finished = 0
        if seen is not None and self._first is not None:
            finished = max(0, seen.tasks_finished - self._first.tasks_finished)
        line = describe(seen)
        if self._progress is not None and self._task is not None:
            if seen is None:  # the numbers stay as last seen
                self._progress.update(self._task, description=line)
                return
            left = sum(seen.tasks_requested.values())
            self._progress.update(
                self._task, description=line, completed=finished, total=finished + left
            )
            return
        now = time.monotonic()
        if seen is not None and seen.idle:
            return  # nothing to report: `wait` says idle when it returns
        if line != self._last_line and now - self._last_at >= PLAIN_EVERY_S:
            self.console.print(f"waiting: {finished:,} done, {line}", markup=False, highlight=False)
            self._last_line, self._last_at = line, now
