"""What `headwater status` prints: a summary that fits a terminal however many partitions are
held (counts per dataset and state, the first errored partitions), and one dataset's
partitions a page at a time. Rendering only: the numbers come from HeadwaterClient."""

import re
from datetime import datetime, timedelta
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.contracts.errors import InputError

# The states a partition is in, in the order shown (the scheduler's store.STATES).
STATES = ("ready", "waiting", "queued", "errored", "blocked", "retracted")
_STYLES = {"ready": "green", "queued": "cyan", "errored": "red", "blocked": "yellow"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_SINCE_HELP = (
    "an ISO time (2024-01-02, 2024-01-02T10:00, ...+02:00) or a time ago (90s, 10m, 2h30m, 3d, 1w)"
)


def parse_since(text: str, now: datetime) -> datetime:
    """The time `text` names: an ISO 8601 date or time (without a zone: in `now`'s zone), or
    a duration before `now` (`90s`, `10m`, `2h`, `3d`, `1w`, or sums like `1h30m`). `now`
    must carry its zone; so does the result."""
    value = text.strip().lower()
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError("since", f"cannot read {text!r}: use {_SINCE_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    if when > now:
        raise InputError("since", f"{text!r} is in the future")
    return when


def check_states(states: list[str]) -> list[str]:
    """The states named, each once, in the order given; an unknown one is bad input."""
    for s in states:
        if s == "running":
            raise InputError(
                "state", "running is not a stored state: --state queued shows which run"
            )
        if s not in STATES:
            raise InputError("state", f"{s!r} is not one of {', '.join(STATES)}")
    return list(dict.fromkeys(states))


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """The counts table (a row per dataset), what is in flight, and the errored partitions
    listed up to the number the summary holds, then how many more."""
    datasets = summary["datasets"]
    if not datasets:
        console.print("no datasets: apply a pipeline (headwater apply FILE)")
        return
    rows = []
    for d in datasets:
        name = d["dataset"] + (" (source)" if d.get("kind") == "source" else "")
        rows.append((name, [d["counts"].get(s, 0) for s in STATES], d["total"]))
    if len(datasets) > 1:
        totals = [sum(d["counts"].get(s, 0) for d in datasets) for s in STATES]
        rows.append(("all", totals, sum(d["total"] for d in datasets)))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1))
    table.add_column("dataset", no_wrap=True, overflow="ellipsis", max_width=40)
    # The numbers keep their width; a long dataset name gives way.
    for i, s in enumerate((*STATES, "total")):
        widest = max(len(f"{n[1][i] if i < len(STATES) else n[2]:,}") for n in rows)
        table.add_column(s, justify="right", no_wrap=True, min_width=max(len(s), widest))
    for n, (name, counts, total) in enumerate(rows):
        if name == "all" and n == len(datasets):
            table.add_section()
        cells = [_count(c, _STYLES.get(s)) for s, c in zip(STATES, counts, strict=True)]
        table.add_row(name, *cells, f"{total:,}")
    console.print(table)
    console.print(_in_flight(summary), highlight=False)
    errored, total = summary["errored"], summary["errored_total"]
    if total:
        console.print(f"[red]errored[/red]: {total:,} partition(s)", highlight=False)
        width = max(len(f"{e['dataset']}/{e['partition_key']}") for e in errored) if errored else 0
        for e in errored:
            name = f"{e['dataset']}/{e['partition_key']}"
            console.print(
                f"  {name:<{width}}  {_first_line(e['error'])}",
                markup=False,
                highlight=False,
                no_wrap=True,
                overflow="ellipsis",
            )
        if total > len(errored):
            console.print(
                f"  ... and {total - len(errored):,} more:"
                " headwater status DATASET --state errored",
                highlight=False,
            )
    blocked = sum(d["counts"].get("blocked", 0) for d in datasets)
    if blocked:
        console.print(
            f"[yellow]blocked[/yellow]: {blocked:,} partition(s) wait on errored ones:"
            " --state blocked lists them",
            highlight=False,
        )


def _in_flight(summary: dict[str, Any]) -> str:
    requested, running, queue = (
        summary["tasks_requested"],
        summary.get("running"),
        summary.get("work_queue"),
    )
    outbox = summary["outbox_pending"]
    if not requested and not running and not queue and not outbox:
        return "tasks: none requested (nothing to do)"
    text = f"tasks: {requested:,} requested"
    if running is not None and queue is not None:
        text += f"; executors run {running:,}, {queue:,} wait in the work queue"
    if outbox:
        text += f"; {outbox:,} event(s) not yet published"
    return text


def print_listing(
    console: Console, listing: dict[str, Any], limit: int, now: datetime | None = None
) -> None:
    """One dataset's partitions, a row each on one line (when each last changed: how long
    before `now`), then how many more match."""
    now = now or datetime.now().astimezone()
    rows, more = listing["partitions"], listing["more"]
    if not rows:
        console.print(f"{listing['dataset']}: no partition matches", highlight=False)
        return
    cells = []
    for p in rows:
        state = "running" if p.get("running") else p["state"]
        cells.append(
            (
                p["partition_key"],
                state,
                f"{p['rows']:,}" if p["rows"] is not None else "",
                (p["data_sha"] or "")[:12],
                _ago(p.get("updated_at"), now),
                _first_line(p.get("error") or p.get("reason") or ""),
            )
        )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1))
    # Every column keeps its width but the reason, which gives way (one line per partition).
    used = 0
    for i, col in enumerate(("partition", "state", "rows", "data SHA", "changed")):
        width = max(len(col), *(len(c[i]) for c in cells))
        used += width + 2  # and the gap before the next
        table.add_column(
            col, no_wrap=True, width=width, justify="right" if col == "rows" else "left"
        )
    room = max(console.width - used - 1, len("reason"))
    table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=room)
    for key, state, count, sha, when, reason in cells:
        style = _STYLES.get(state, "cyan" if state == "running" else "")
        shown = f"[{style}]{state}[/{style}]" if style else state
        table.add_row(escape(key), shown, count, sha, when, escape(reason))
    console.print(table)
    if more:
        console.print(
            f"{more:,} more: --limit {limit + more} shows them all,"
            f" --after {listing['next']} the next page",
            highlight=False,
            markup=False,
        )


def print_every_partition(console: Console, status: dict[str, Any]) -> None:
    """Every partition, a row each (`status --all`): for small pipelines and grep."""
    table = Table()
    # Objects are stored as DATA_SHA.parquet: `--json` has the full key.
    for col in ("dataset", "partition", "state", "rows", "data SHA"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for p in status["partitions"]:
        table.add_row(
            p["dataset"],
            p["partition_key"],
            p["state"],
            str(p["rows"] if p["rows"] is not None else ""),
            (p["data_sha"] or "")[:12],
            p["error"] or p["reason"] or "",
        )
    console.print(table)
    console.print(f"tasks running: {status['tasks_requested']}")


def _count(n: int, style: str | None) -> str:
    if not n:
        return "[dim]0[/dim]"
    return f"[{style}]{n:,}[/{style}]" if style else f"{n:,}"


def _first_line(text: str) -> str:
    lines = text.strip().split("\n")
    return lines[0] + (" ..." if len(lines) > 1 else "")


def _ago(value: Any, now: datetime) -> str:
    """How long before `now` a stored time is, in its largest unit (`--json` has the time)."""
    if value is None:
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
