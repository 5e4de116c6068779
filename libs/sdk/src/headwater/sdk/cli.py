"""The `headwater` command: the user's interface to a running stack.

Every read command takes --json. An error names the field and the reason;
no traceback unless --debug.

Exit codes, for scripts:
  0  done;
  1  Headwater failed or did not answer, or an unexpected error;
  2  bad input: usage, a spec, a name, a key, an option value;
  3  wait (or apply --wait) timed out with work left;
  4  wait --strict (or apply --wait --strict): errored or blocked partitions."""

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.contracts import PROD_ENV, validate_env_name
from headwater.contracts.errors import HeadwaterError, InputError
from headwater.core.errors import SpecError
from headwater.sdk.client import Activity, HeadwaterClient, StillBusy
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack
from headwater.sdk.explain import (
    print_column_changes,
    print_columns,
    print_graph,
    print_history,
    print_impact,
    print_partition_lineage,
)
from headwater.sdk.landing import is_glob, landings
from headwater.sdk.progress import WaitProgress
from headwater.sdk.status import (
    check_states,
    parse_since,
    print_every_partition,
    print_listing,
    print_summary,
)

# Exit codes (the module docstring, the README's CLI section).
EXIT_FAILED, EXIT_INPUT, EXIT_TIMEOUT, EXIT_ERRORED = 1, 2, 3, 4

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    # No traceback (and never its local variables: settings hold passwords) unless --debug.
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="HEADWATER_STATE_DIR", help="embedded stack state")
]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Env = Annotated[
    str | None,
    typer.Option(
        "--env", help="an environment (default: prod); `apply --env` creates it as a view of prod"
    ),
]


def _run(state_dir: Path, fn: Callable[[HeadwaterClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with HeadwaterClient(load_settings(state_dir)) as hw:
            return await fn(hw)

    try:
        return asyncio.run(go())
    except HeadwaterError as exc:
        # Bad input (a spec, a name, a key: "FIELD: REASON", or where in the spec) exits 2;
        # `wait` out of time with work left, 3; Headwater's own trouble, 1.
        err.print(f"[red]error[/red] {exc}")
        code = EXIT_INPUT if isinstance(exc, InputError) else EXIT_FAILED
        raise typer.Exit(EXIT_TIMEOUT if isinstance(exc, StillBusy) else code) from None


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an unexpected error")
    ] = False,
) -> None:
    """(Options before the command; `main` takes --debug anywhere on the line.)"""


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
        print_column_changes(console, result["changes"])
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


DEMO_DAYS = 7


@app.command()
def demo(
    state_dir: StateDir = Path(".state"),
    days: Annotated[
        int, typer.Option("--days", help="days of 2013 to land, from 2013-01-01")
    ] = DEMO_DAYS,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop after the demo")] = False,
) -> None:
    """Start the stack and tell the example's story: a full load, a SQL change, a
    comment-only change, a corrected day, a failing transform, its fix and a revert, with
    what ran, was reused, errored and was blocked at each step."""
    from headwater.sdk.example import days as day_keys
    from headwater.sdk.story import run_story

    try:
        keys = day_keys(days)
    except InputError as exc:
        _bad(*exc.reply())
    stack = _start(state_dir)
    try:
        _run(state_dir, lambda hw: run_story(hw, console, keys, state_dir / "demo"))
    except BaseException:
        stack.stop()
        raise
    if exit_after:
        stack.stop()
        return
    console.print("\nThe stack keeps running; try [bold]headwater status[/bold]. Ctrl-C stops it.")
    _serve(stack)


example_app = typer.Typer(add_completion=False, help="The example pipeline's data.")
app.add_typer(example_app, name="example")


@example_app.command("files")
def example_files(
    directory: Path,
    days: Annotated[int, typer.Option("--days", help="how many days")] = DEMO_DAYS,
    start: Annotated[str, typer.Option("--start", help="the first day")] = "2013-01-01",
) -> None:
    """Write the example's source files into DIRECTORY, as upstream systems would drop them:
    flights/DAY.csv and weather/DAY.csv for each day, airlines/all.csv and airports/all.csv.
    Land them with `headwater publish DATASET DIRECTORY/DATASET`."""
    from headwater.sdk import example

    try:
        keys = example.days(days, start)
        written = example.write_files(directory, keys)
    except InputError as exc:
        _bad(*exc.reply())
    for name, paths in written.items():
        console.print(f"{directory / name}: {len(paths)} file(s)", highlight=False)


def _start(state_dir: Path) -> EmbeddedStack:
    stack = EmbeddedStack(state_dir)
    console.print(f"starting the embedded stack in {state_dir} ...")
    try:
        endpoints = stack.start()
    except HeadwaterError as exc:  # the stack cannot start (StackError, ServerError)
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
    without importing the Python: that runs only here, in the user's process). The spec parser
    (sqlglot, pyarrow) is loaded here, not for every command."""
    from headwater.sdk.precheck import check_spec

    try:
        check_spec(file)
    except SpecError as exc:
        err.print(f"[red]error[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


Timeout = Annotated[float, typer.Option("--timeout", help="seconds to wait (then exit 3)")]
Strict = Annotated[
    bool, typer.Option("--strict", help="exit 4 if partitions are errored or blocked")
]


@app.command()
def apply(
    file: Path,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
    wait_too: Annotated[
        bool, typer.Option("--wait", help="then wait until nothing is left to run")
    ] = False,
    timeout: Timeout = 600,
    strict: Strict = False,
    env: Env = None,
) -> None:
    """Apply a pipeline spec: store it and run what its changes require.

    With --wait, wait until nothing is left to run, as `wait` does. With --env NAME, into
    that environment: what is unchanged is prod's, shared; only what differs runs, and is
    seen only there until `headwater promote NAME`."""
    _validate(file)
    result = _run(state_dir, lambda hw: hw.apply(file, _checked_env(env)))
    if not wait_too:
        _print_json(result) if as_json else _print_changes(result, applied=True)
        return
    if not as_json:
        _print_changes(result, applied=True)
    counts = _wait(state_dir, timeout)
    if as_json:
        _print_json({**result, "idle": counts})
    else:
        console.print(f"idle: {counts}")
    _exit_if_errored(counts, strict)


@app.command()
def plan(
    file: Path, state_dir: StateDir = Path(".state"), as_json: Json = False, env: Env = None
) -> None:
    """Show what applying a spec would change, without changing anything."""
    _validate(file)
    result = _run(state_dir, lambda hw: hw.plan(file, _checked_env(env)))
    _print_json(result) if as_json else _print_changes(result, applied=False)


@app.command()
def publish(
    dataset: str,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PARTITION FILE | PATH...",
            help="a partition key and its file; or files, folders or globs",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDir = Path(".state"),
    delete: Annotated[
        bool, typer.Option("--delete", help="retract the partition: remove its files")
    ] = False,
) -> None:
    """Land source partitions of DATASET from Parquet, CSV or JSON lines files, or with
    --delete retract one (`publish --delete DATASET PARTITION`).

    `publish DATASET PARTITION FILE` lands FILE as DATASET/PARTITION. `publish DATASET
    PATH...` lands every file and folder each PATH names (a file, a directory's entries, or a
    glob): a file is the partition named by its stem (`2013-01-02.csv` is `2013-01-02`), a
    folder the partition named by the folder, holding all its files. Names starting with `.`
    in a directory are left out. Every path is checked before anything lands."""
    targets = targets or []
    if delete:
        if len(targets) != 1:
            _bad("partition", "--delete takes one PARTITION")
        keys = _run(state_dir, lambda hw: hw.delete(dataset, targets[0]))
        console.print(f"removed {len(keys)} file(s) of {dataset}/{targets[0]}")
        return
    if not targets:
        _bad("file", "name the file to publish, or files, folders or a glob (or --delete)")
    if len(targets) == 1 and not _a_path(targets[0]):
        _bad("file", f"name the file to publish as {dataset}/{targets[0]} (or --delete)")
    if len(targets) == 2 and not _a_path(targets[0]):  # PARTITION FILE
        partition, file = targets[0], Path(targets[1])
        if not file.is_file():
            _bad("file", f"{file} does not exist")
        event = _run(state_dir, lambda hw: hw.publish(dataset, partition, file))
        console.print(f"published {event.key} (event {event.event_id})")
        return
    try:
        found = landings(targets)
    except InputError as exc:
        _bad(*exc.reply())

    async def land(hw: HeadwaterClient) -> None:
        for landing in found:
            await hw.publish(dataset, landing.partition, landing.file, name=landing.name)

    _run(state_dir, land)
    keys = sorted({landing.partition for landing in found})
    shown = keys[0] if len(keys) == 1 else f"{keys[0]} ... {keys[-1]}"
    console.print(
        f"published {len(keys)} partition(s) of {dataset} ({shown}) from {len(found)} file(s)"
    )


def _a_path(target: str) -> bool:
    """Whether a publish argument names files (a path that exists, or a glob) rather than a
    partition key: a key has no `/`, and a key that is also a file or folder here is a path."""
    return is_glob(target) or "/" in target or Path(target).exists()


@app.command()
def status(
    dataset: Annotated[
        str | None, typer.Argument(help="list this dataset's partitions instead")
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            help="with DATASET: only partitions in this state (repeatable): "
            "ready, waiting, queued, errored, blocked, retracted",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="with DATASET: only partitions changed since then: an ISO time "
            "(2024-01-02T10:00; local unless it names a zone) or a time ago (10m, 2h, 3d)"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="with DATASET: at most this many rows")] = 50,
    after: Annotated[
        str | None, typer.Option(help="with DATASET: the rows after this partition key")
    ] = None,
    errors: Annotated[
        int, typer.Option("--errors", help="errored partitions listed in the summary")
    ] = 20,
    every: Annotated[
        bool, typer.Option("--all", help="every partition, a row each (small pipelines)")
    ] = False,
    summary_only: Annotated[
        bool, typer.Option("--summary", help="with --json: leave out `partitions`")
    ] = False,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
    env: Env = None,
) -> None:
    """Partitions per dataset and state, and the errored ones; or one dataset's partitions.

    Without DATASET: a row per dataset with its partitions per state, what executors run, and
    the first --errors errored partitions with their errors. --json holds the same, plus
    `partitions`: every partition, as `status --json` always had (--summary leaves it out).

    With DATASET: its partitions in key order, at most --limit, narrowed by --state and
    --since; --after KEY continues after a key. A queued partition an executor holds shows as
    running."""
    env = _checked_env(env)
    if dataset is None:
        if state or since or after:
            _bad("state", "--state, --since and --after need a DATASET")
        if every and not as_json:
            print_every_partition(console, _run(state_dir, lambda hw: hw.status(env)))
            return
        found = _run(
            state_dir,
            lambda hw: _summary(hw, errors, listing=as_json and not summary_only, env=env),
        )
        _print_json(found) if as_json else print_summary(console, found)
        return
    if every or summary_only:
        _bad("dataset", "--all and --summary are for the summary, without a DATASET")
    if limit < 1:
        _bad("limit", "must be at least 1")
    try:
        states = check_states(state) if state else None
        changed = parse_since(since, datetime.now().astimezone()) if since else None
    except InputError as exc:
        _bad(*exc.reply())
    listing = _run(
        state_dir,
        lambda hw: hw.partitions(
            dataset, states=states, since=changed, after=after, limit=limit, env=env
        ),
    )
    _print_json(listing) if as_json else print_listing(console, listing, limit)


async def _summary(
    hw: HeadwaterClient, errors: int, *, listing: bool, env: str | None = None
) -> dict[str, Any]:
    found = await hw.summary(errored=errors, env=env)
    if listing:  # as `status --json` always had it
        found["partitions"] = (await hw.status(env))["partitions"]
    return found


def _checked_env(env: str | None) -> str | None:
    """The environment named by --env (None: prod, the default), or exit 2 naming it."""
    if env is None:
        return None
    try:
        validate_env_name(env, "env")
    except InputError as exc:
        _bad(*exc.reply())
    return None if env == PROD_ENV else env


@app.command()
def promote(name: str, state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Make environment NAME's definitions prod's. Nothing runs: every output it needs was
    computed in the environment, and prod adopts it by fingerprint."""
    result = _run(state_dir, lambda hw: hw.promote(_env_named(name)))
    if as_json:
        _print_json(result)
        return
    for c in result["changes"]:
        console.print(f"{c['dataset']}: {c['change']} (promoted from {name})")
    if not result["changes"]:
        console.print(f"prod already has {name}'s definitions")


def _env_named(name: str) -> str:
    env = _checked_env(name)
    if env is None:
        _bad("env", "prod is the default environment: name another")
    return env


env_app = typer.Typer(add_completion=False, help="Environments: list, compare, drop.")
app.add_typer(env_app, name="env")


@env_app.command("list")
def env_list(state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Every environment: its datasets, pipelines, and definitions that differ from prod."""
    found = _run(state_dir, lambda hw: hw.envs())
    if as_json:
        _print_json(found)
        return
    for e in found:
        console.print(
            f"{e['env']}: {e['datasets']} datasets ({', '.join(e['pipelines'])}),"
            f" {e['differ']} differ from prod"
        )


@env_app.command("diff")
def env_diff(a: str, b: str, state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """What differs between environments A and B: datasets (code SHAs) and partitions (state
    and data SHA)."""
    for name in (a, b):
        _checked_env(name)
    found = _run(state_dir, lambda hw: hw.env_diff(a, b))
    if as_json:
        _print_json(found)
        return
    for d in found["datasets"]:
        console.print(f"{d['dataset']}: code {str(d[a])[:12]} in {a}, {str(d[b])[:12]} in {b}")
    for p in found["partitions"]:
        sides = [p[a], p[b]]
        shown = [f"{s['state']} {str(s['data_sha'])[:12]}" if s else "absent" for s in sides]
        console.print(f"{p['dataset']}/{p['partition_key']}: {shown[0]} in {a}, {shown[1]} in {b}")
    if not found["datasets"] and not found["partitions"]:
        console.print(f"{a} and {b} hold the same")


@env_app.command("drop")
def env_drop(name: str, state_dir: StateDir = Path(".state"), as_json: Json = False) -> None:
    """Remove environment NAME: its definitions and partitions, and the data objects nothing
    else references (prod's, and other environments', are kept)."""
    result = _run(state_dir, lambda hw: hw.drop_env(_env_named(name)))
    if as_json:
        _print_json(result)
        return
    console.print(
        f"dropped {name}: {result['partitions']} partitions of its own,"
        f" {result['objects_deleted']} objects deleted, {result['cancelled']} tasks cancelled"
    )


def _bad(field: str, reason: str) -> NoReturn:
    err.print(f"[red]error[/red] {field}: {reason}", highlight=False)
    raise typer.Exit(EXIT_INPUT)


@app.command()
def wait(
    state_dir: StateDir = Path(".state"),
    timeout: Timeout = 600,
    strict: Strict = False,
    as_json: Json = False,
) -> None:
    """Return when nothing is pending or running, showing what runs and what is left.

    Exit 3 if still busy after --timeout seconds; with --strict, exit 4 if partitions are
    errored or blocked."""
    counts = _wait(state_dir, timeout)
    _print_json(counts) if as_json else console.print(f"idle: {counts}")
    _exit_if_errored(counts, strict)


def _wait(state_dir: Path, timeout: float) -> dict[str, int]:
    """Wait for idle (a live bar when stdout is a terminal), then the partitions per state
    (retracted aside, zeros left out)."""

    async def go(hw: HeadwaterClient) -> dict[str, int]:
        with WaitProgress(
            console if console.is_terminal else err, live=console.is_terminal
        ) as shown:

            def progress(seen: Activity | None) -> None:
                shown.update(seen)

            await hw.wait_idle(timeout, on_progress=progress)
        found = await hw.summary(errored=0)
        counts: dict[str, int] = {}
        for d in found["datasets"]:
            for name, n in d["counts"].items():
                if n and name != "retracted":
                    counts[name] = counts.get(name, 0) + n
        return counts

    return _run(state_dir, go)


def _exit_if_errored(counts: dict[str, int], strict: bool) -> None:
    bad = {s: counts[s] for s in ("errored", "blocked") if counts.get(s)}
    if strict and bad:
        err.print(
            "[red]error[/red] "
            + ", ".join(f"{n} partition(s) {s}" for s, n in bad.items())
            + ": headwater status",
            highlight=False,
        )
        raise typer.Exit(EXIT_ERRORED)


@app.command()
def why(
    dataset: str,
    partition: str,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
    env: Env = None,
) -> None:
    """Which code or input change caused each materialization of a partition."""
    result = _run(state_dir, lambda hw: hw.why(dataset, partition, _checked_env(env)))
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


Depth = Annotated[
    int, typer.Option("--depth", min=1, max=100, help="steps to follow each way (1: adjacent)")
]


@app.command()
def lineage(
    dataset: str,
    partition: Annotated[str | None, typer.Argument(help="a partition (else the dataset)")] = None,
    depth: Depth = 20,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
    history: Annotated[
        bool,
        typer.Option(
            "--all", help="every edge ever recorded (earlier materializations, retracted ones)"
        ),
    ] = False,
    columns: Annotated[
        bool,
        typer.Option(
            "--columns", help="per output column of DATASET, the input columns it comes from"
        ),
    ] = False,
    env: Env = None,
) -> None:
    """What a partition is made from and what is made from it, as trees with each
    partition's data SHA and the code SHA that made it (now; --all: ever). Without PARTITION:
    the datasets it reads and that read it, with their mappings and code SHAs. With
    --columns: column-level lineage of a SQL dataset, from its SQL over its inputs' columns
    (what cannot be resolved is said: a Python input, SELECT * over unknown columns)."""
    if columns:
        if partition is not None or history:
            _bad("columns", "--columns takes a DATASET only (no PARTITION, no --all)")
        found = _run(state_dir, lambda hw: hw.columns(dataset))
        _print_json(found) if as_json else print_columns(console, found)
        return
    if partition is None:
        if history:
            _bad("all", "--all is for a partition's lineage")
        graph = _run(state_dir, lambda hw: hw.graph(dataset, depth))
        _print_json(graph) if as_json else print_graph(console, graph)
        return
    key = partition
    env = _checked_env(env)
    result = _run(state_dir, lambda hw: hw.lineage(dataset, key, depth, history=history, env=env))
    if as_json:
        _print_json(result)
        return
    print_partition_lineage(console, result, history=history, depth=depth)


@app.command("history")
def history_(
    dataset: str, partition: str, state_dir: StateDir = Path(".state"), as_json: Json = False
) -> None:
    """Every materialization of a partition, oldest first: when, its data and code SHAs, why
    it ran and from which inputs; failures, retractions and the dataset's code changes between
    them. * marks the current one."""
    found = _run(state_dir, lambda hw: hw.history(dataset, partition))
    _print_json(found) if as_json else print_history(console, found)


@app.command()
def impact(
    dataset: str,
    partition: Annotated[str | None, typer.Argument(help="a partition (else all of them)")] = None,
    shown: Annotated[
        int, typer.Option("--show", min=0, max=1000, help="partitions listed per dataset")
    ] = 20,
    state_dir: StateDir = Path(".state"),
    as_json: Json = False,
) -> None:
    """What would run if a partition changed (its content, or its code or inputs), or
    without PARTITION if the dataset's code changed (every partition of it): per dataset, how
    many partitions would be recomputed, and the first --show of them. Downstream of DATASET
    an upper bound: a recomputation that gives the same data stops there."""
    found = _run(state_dir, lambda hw: hw.impact(dataset, partition, shown))
    _print_json(found) if as_json else print_impact(console, found)


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
    """The `headwater` command: an unexpected error is one line and exit 1, unless --debug
    (anywhere on the command line) asks for its traceback."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--debug")]
    try:
        app()
    except Exception as exc:
        if debug:
            raise
        err.print(
            f"[red]error[/red] unexpected: {type(exc).__name__}: {escape(str(exc))}"
            " (a bug? --debug shows the traceback)",
            markup=True,
            highlight=False,
        )
        sys.exit(EXIT_FAILED)
