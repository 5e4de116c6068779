"""The `headwater` command: the user's interface to a running stack. Every read command
takes --json; errors name the field and the reason and exit non-zero."""

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.contracts import ContractError
from headwater.core.errors import SpecError
from headwater.runtime.errors import HeadwaterError, InputError
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack, StackError
from headwater.sdk.precheck import check_spec
from headwater.sdk.servers import ServerError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="HEADWATER_STATE_DIR", help="embedded stack state")
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _run(state_dir: Path, fn: Callable[[HeadwaterClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with HeadwaterClient(load_settings(state_dir)) as hw:
            return await fn(hw)

    try:
        return asyncio.run(go())
    except (InputError, ContractError) as exc:
        err.print(f"[red]error[/red] {exc.field}: {exc.reason}")
        raise typer.Exit(2) from None
    except SpecError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(2) from None
    except HeadwaterError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_changes(result: dict[str, Any], applied: bool) -> None:
    table = Table(title=f"pipeline {result['pipeline']}")
    columns = ["dataset", "kind", "change", "code SHA"]
    if not applied:
        columns += ["will run", "reused"]
    for col in columns:
        table.add_column(col)
    for c in result["changes"]:
        old, new = c["previous_code_sha"], c["code_sha"]
        sha = f"{(old or '-')[:12]} -> {(new or '-')[:12]}" if old != new else (new or "")[:12]
        row = [c["dataset"], c["kind"], c["change"], sha]
        if not applied:
            row += [str(len(c.get("run", []))), str(len(c.get("reuse", [])))]
        table.add_row(*row)
    console.print(table)
    if not applied:
        total = sum(len(c.get("run", [])) for c in result["changes"])
        console.print(f"{total} partition(s) will run")
        for name, keys in result.get("downstream", {}).items():
            console.print(
                f"  then up to {len(keys)} partition(s) of {name} downstream"
                " (an upper bound: early cutoff may stop them)"
            )
    if applied:
        version = result.get("spec_version")
        console.print(f"spec version {version}" if version else "nothing changed")


@app.command()
def up(state_dir: StateDir = Path(".state")) -> None:
    """Start the embedded stack and serve until Ctrl-C or SIGTERM."""
    stack = _start(state_dir)
    _serve(stack)


@app.command()
def demo(
    state_dir: StateDir = Path(".state"),
    exit_after: Annotated[bool, typer.Option("--exit", help="stop after the demo")] = False,
) -> None:
    """Start the stack, apply the example pipeline, publish a day of flights, show the result."""
    from headwater.sdk.example import run_example

    stack = _start(state_dir)
    try:
        _run(state_dir, lambda hw: run_example(hw, console))
    except BaseException:
        stack.stop()
        raise
    if exit_after:
        stack.stop()
        return
    console.print("\nThe stack keeps running; try [bold]headwater status[/bold]. Ctrl-C stops it.")
    _serve(stack)


def _start(state_dir: Path) -> EmbeddedStack:
    stack = EmbeddedStack(state_dir)
    console.print(f"starting the embedded stack in {state_dir} ...")
    try:
        endpoints = stack.start()
    except (StackError, ServerError) as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    try:
        _run(state_dir, lambda hw: hw.ready())
    except BaseException:
        stack.stop()
        raise
    for key, value in endpoints.items():
        if "secret" not in key:
            console.print(f"  {key:<14} {value}")
    console.print(f"  endpoints in   {stack.endpoints_path}")
    console.print(f"  secrets in     {stack.secrets_path} (readable by you only)")
    return stack


def _serve(stack: EmbeddedStack) -> None:
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The supervisor reports restarts and crash loops through logging, on stderr.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        while not stopping:
            time.sleep(0.5)
            stack.supervise()
    finally:
        console.print("stopping ...")
        stack.stop()


def _validate(file: Path) -> None:
    """Reject a bad spec here, before talking to any service (spec-registry checks again,
    without importing the Python: that runs only here, in the user's process)."""
    try:
        check_spec(file)
    except SpecError as exc:
        err.print(f"[red]error[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


@app.command()
def apply(file: Path, state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Apply a pipeline spec: store it and run what its changes require."""
    _validate(file)
    result = _run(state_dir, lambda hw: hw.apply(file))
    _print_json(result) if as_json else _print_changes(result, applied=True)


@app.command()
def plan(file: Path, state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Show what applying a spec would change, without changing anything."""
    _validate(file)
    result = _run(state_dir, lambda hw: hw.plan(file))
    _print_json(result) if as_json else _print_changes(result, applied=False)


@app.command()
def publish(
    dataset: str,
    partition: str,
    file: Annotated[Path | None, typer.Argument()] = None,
    state_dir: StateDir = Path(".state"),
    delete: Annotated[
        bool, typer.Option("--delete", help="retract the partition: remove its files")
    ] = False,
) -> None:
    """Land FILE (Parquet, CSV or JSON lines) as source partition DATASET/PARTITION,
    or with --delete retract the partition."""
    if delete:
        keys = _run(state_dir, lambda hw: hw.delete(dataset, partition))
        console.print(f"removed {len(keys)} file(s) of {dataset}/{partition}")
        return
    if file is None:
        err.print("[red]error[/red] file: name the file to publish (or --delete)")
        raise typer.Exit(2)
    if not file.is_file():
        err.print(f"[red]error[/red] file: {file} does not exist")
        raise typer.Exit(2)
    event = _run(state_dir, lambda hw: hw.publish(dataset, partition, file))
    console.print(f"published {event.key} (event {event.event_id})")


@app.command()
def status(state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Every partition's state, data SHA and where it is stored."""
    result = _run(state_dir, lambda hw: hw.status())
    if as_json:
        _print_json(result)
        return
    table = Table()
    # Objects are stored as DATA_SHA.parquet: `--json` has the full key.
    for col in ("dataset", "partition", "state", "rows", "data SHA"):
        table.add_column(col, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for p in result["partitions"]:
        table.add_row(
            p["dataset"],
            p["partition_key"],
            p["state"],
            str(p["rows"] if p["rows"] is not None else ""),
            (p["data_sha"] or "")[:12],
            p["error"] or p["reason"] or "",
        )
    console.print(table)
    console.print(f"tasks running: {result['tasks_requested']}")


@app.command()
def wait(
    state_dir: StateDir = Path(".state"),
    timeout: Annotated[float, typer.Option(help="seconds")] = 600,
    as_json: Json = False,
) -> None:
    """Return when nothing is pending or running (showing what is still to do)."""
    with err.status("waiting ...") as spinner:

        def progress(busy: dict[str, int]) -> None:
            todo = ", ".join(f"{name} {n}" for name, n in busy.items() if n)
            spinner.update(f"waiting: {todo or 'settling'}")

        result = _run(state_dir, lambda hw: hw.wait(timeout, on_progress=progress))
    counts: dict[str, int] = {}
    for p in result["partitions"]:
        counts[p["state"]] = counts.get(p["state"], 0) + 1
    _print_json(counts) if as_json else console.print(f"idle: {counts}")


@app.command()
def why(
    dataset: str, partition: str, state_dir: StateDir = Path(".state"), as_json: Json = False
) -> None:
    """Which code or input change caused each materialization of a partition."""
    result = _run(state_dir, lambda hw: hw.why(dataset, partition))
    if as_json:
        _print_json(result)
        return
    p = result["partition"]
    out = console.print
    gone = result.get("retracted")
    if gone is not None:
        was = gone["was"]
        out(f"{dataset}/{partition}: retracted at {gone['at']}: {gone['reason']}", markup=False)
        if was["data_sha"]:
            out(
                f"  it was {was['state']}: data {was['data_sha'][:12]}, {was['rows']} row(s)"
                f" (fingerprint {str(was['fingerprint'])[:12]})"
            )
        else:
            out(f"  it was {was['state']}, with no data")
    else:
        out(f"{dataset}/{partition}: {p['state']} data {str(p['data_sha'] or '-')[:12]}")
    task = result.get("task")
    error = task.get("error") if task else None
    failures = (task.get("attempt_errors") or []) if task else []
    # An errored partition's reason is its task's error, shown below.
    unsettled = p["state"] in ("errored", "blocked", "waiting", "queued")
    if gone is None and unsettled and p["reason"] != error:
        out(f"  {p['state']}: {p['reason'] or '-'}", markup=False)
    if task and error:
        # The final error is the last attempt's, on its line below: said here only if not.
        last = failures[-1] if failures else None
        said = last is not None and (last["request"], last["error"]) == (task["requests"], error)
        out(
            f"  failed after {task['attempts']} run(s) over {task['requests']} request(s)"
            + (":" if said else f": {error}"),
            markup=False,
        )
    elif failures:  # it succeeded, or runs, after failed attempts
        out(f"  {len(failures)} failed attempt(s):")
    for f in failures:
        out(
            f"    request {f['request']} attempt {f['attempt']} at {f['at']}"
            f" on {f['executor']}: {_one_line(f['error'])}",
            markup=False,
            highlight=False,
            soft_wrap=True,  # one line each, however narrow the terminal (and for grep)
        )
    if task and error:
        lines = (task.get("traceback") or "").rstrip("\n").split("\n")
        if lines[-1] == error:  # its last line is the error, just shown
            lines.pop()
        if any(lines):
            out("\n".join(lines), markup=False, highlight=False)
    for m in result["materializations"]:
        mark = "*" if m["current"] else " "
        inputs = ", ".join(f"{i['dataset']}/{i['partition_key']}" for i in m["inputs"])
        console.print(
            f" {mark} {m['created_at']} fingerprint {m['fingerprint'][:12]} -> data "
            f"{m['data_sha'][:12]}: {m['reason'] or '-'}" + (f" (from {inputs})" if inputs else "")
        )


def _one_line(text: str) -> str:
    """The first line of `text`, saying how many more there are (--json has them all)."""
    lines = text.strip().split("\n")
    more = f" [{len(lines) - 1} more line(s): --json]" if len(lines) > 1 else ""
    return lines[0] + more


@app.command()
def retry(
    dataset: str,
    partition: Annotated[str | None, typer.Argument()] = None,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
) -> None:
    """Run a dataset's errored partitions again (or one); what they block follows."""
    result = _run(state_dir, lambda hw: hw.retry(dataset, partition))
    if as_json:
        _print_json(result)
        return
    keys = result["retried"]
    console.print(f"retrying {len(keys)} partition(s) of {dataset}: {', '.join(keys) or '-'}")


@app.command()
def lineage(
    dataset: str,
    partition: str,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
    history: Annotated[
        bool,
        typer.Option(
            "--all", help="every edge ever recorded (earlier materializations, retracted ones)"
        ),
    ] = False,
) -> None:
    """The partitions a partition is made from, and those made from it (now; --all: ever)."""
    result = _run(state_dir, lambda hw: hw.lineage(dataset, partition, history=history))
    if as_json:
        _print_json(result)
        return
    for direction in ("upstream", "downstream"):
        console.print(f"[bold]{direction}[/bold]")
        for e in result[direction]:
            indent = "  " * e["depth"]
            mark = "" if not history else "  current" if e["current"] else "  history"
            console.print(
                f"{indent}{e['input_dataset']}/{e['input_key']} -> "
                f"{e['output_dataset']}/{e['output_key']}  ({e['fingerprint'][:12]}){mark}",
                markup=False,
                highlight=False,
            )
        hidden = result["not_shown"][direction]
        if hidden:
            console.print(f"  ({hidden} edge(s) of earlier materializations not shown: --all)")


dlq_app = typer.Typer(
    invoke_without_command=True, add_completion=False, help="Dead letters: list and replay."
)
app.add_typer(dlq_app, name="dlq")


@dlq_app.callback()
def dlq(
    ctx: typer.Context,
    state_dir: StateDir = Path(".state"),
    limit: Annotated[int, typer.Option(help="newest N")] = 50,
    as_json: Json = False,
) -> None:
    """Rejected input kept for inspection: which field, and why."""
    if ctx.invoked_subcommand is not None:
        return
    letters = _run(state_dir, lambda hw: hw.dead_letters(limit))
    if as_json:
        _print_json(letters)
        return
    table = Table()
    for col in ("seq", "service", "subject", "field", "reason"):
        table.add_column(col)
    for d in letters:
        table.add_row(str(d["seq"]), d["service"], d["subject"], d["field"], d["reason"])
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="sequences (see `dlq`); all if none")
    ] = None,
    service: Annotated[str | None, typer.Option(help="only letters this service rejected")] = None,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
) -> None:
    """Publish dead letters again where they came from, after a fix; replayed letters leave
    the dead-letter stream."""
    result = _run(state_dir, lambda hw: hw.replay_dead_letters(service=service, seqs=ids or None))
    if as_json:
        _print_json(result)
        return
    for r in result["replayed"]:
        console.print(f"replayed {r['seq']} ({r['service']}) on {r['subject']}")
    for r in result["skipped"]:
        console.print(f"[yellow]skipped[/yellow] {r['seq']} ({r['service']}): {r['why']}")
    console.print(f"{len(result['replayed'])} replayed, {len(result['skipped'])} skipped")


def main() -> None:
    app()
