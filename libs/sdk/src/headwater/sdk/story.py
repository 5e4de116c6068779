"""`headwater demo`: the example pipeline as a story told by the running stack, each step with
what ran, what was reused, what errored and what it blocked, counted from the stack's own
events (`partition landed` and `task failed` on the events stream) and partition states.

The story edits a copy of examples/flights under WORK (the state directory's `demo/`) and
ends with that copy equal to the example as shipped, so `headwater apply
examples/flights/pipeline.yaml` afterwards changes nothing."""

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from nats.aio.msg import Msg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.contracts.errors import InputError
from headwater.core import formats
from headwater.core.mappings import UNPARTITIONED_KEY
from headwater.runtime.objectstore import open_store
from headwater.sdk import example
from headwater.sdk.client import HeadwaterClient

PIPELINE = "pipeline.yaml"
# The edits the story makes to the example, each (file, text as shipped, text in the story).
# Step 2's "before": a departure counted late when it left at all behind schedule.
LATE_AT_ANY_DELAY = ("sql/carrier_delays.sql", "f.dep_delay > 15", "f.dep_delay > 0")
COMMENT_ONLY = (
    "sql/carrier_delays.sql",
    "    count(*) FILTER (WHERE f.dep_delay > 15) AS late,\n",
    "    -- 15 minutes: the FAA's definition of a late departure\n"
    "    COUNT(*) FILTER (WHERE f.dep_delay > 15)   AS late,\n",
)
# Step 5: the noon temperature, read as if every airport reported at noon (on 2013-01-01
# EWR and JFK did not: KeyError); step 6 fixes it (no reading: null).
NOON = (
    "    return out\n",
    "    noon = weather.filter(pc.equal(weather['hour'], 12))\n"
    "    temp_at = dict(zip(noon['origin'].to_pylist(), noon['temp'].to_pylist()))\n"
    "    temps = [temp_at{lookup} for o in out['origin'].to_pylist()]\n"
    "    return out.append_column('noon_temp', pa.array(temps, pa.float64()))\n",
)
NOON_FAILS = ("transforms.py", NOON[0], NOON[1].format(lookup="[o]"))
NOON_FIXED = ("transforms.py", NOON[0], NOON[1].format(lookup=".get(o)"))
IMPORT_PC = (
    "transforms.py",
    "import pyarrow as pa\n",
    "import pyarrow as pa\nimport pyarrow.compute as pc\n",
)
Edit = tuple[str, str, str]


@dataclass
class Counts:
    """One step's outcome, per dataset: computations that finished (`ran`) or failed
    (`failed`), partitions now current on an earlier materialization (`reused`), partitions
    that were errored or blocked and are ready again (`resumed`), and the partitions errored
    and blocked after the step; `landed`: source partitions with new content."""

    landed: dict[str, int] = field(default_factory=dict)
    ran: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    resumed: dict[str, int] = field(default_factory=dict)
    errored: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: dict(v) for k, v in self.__dict__.items()}


@dataclass
class Step:
    title: str
    counts: Counts
    files: dict[str, str]  # the pipeline's files as applied (relative path -> text)
    sources: dict[str, dict[str, bytes]]  # dataset -> key -> the file landed (CSV)


@dataclass
class Story:
    days: list[str]
    work: Path
    console: Console
    steps: list[Step] = field(default_factory=list)
    landed: dict[str, dict[str, bytes]] = field(default_factory=dict)
    failing_day: str | None = None

    @property
    def spec_dir(self) -> Path:
        return self.work / "pipeline"

    @property
    def files_dir(self) -> Path:
        return self.work / "files"

    def write_spec(self, *edits: Edit, sources_only: bool = False) -> Path:
        """The example as shipped with `edits` applied, written to the working copy."""
        if self.spec_dir.exists():
            shutil.rmtree(self.spec_dir)
        shutil.copytree(
            example.EXAMPLE_DIR, self.spec_dir, ignore=shutil.ignore_patterns("__pycache__")
        )
        for name, old, new in edits:
            path = self.spec_dir / name
            text = path.read_text()
            if text.count(old) != 1:
                raise InputError("example", f"{name} no longer holds {old.strip()!r} once")
            path.write_text(text.replace(old, new))
        spec = self.spec_dir / PIPELINE
        if sources_only:
            raw = yaml.safe_load(spec.read_text())
            spec.write_text(
                yaml.safe_dump(
                    {"pipeline": raw["pipeline"], "sources": raw["sources"]}, sort_keys=False
                )
            )
        return spec

    def files(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.spec_dir)): p.read_text()
            for p in sorted(self.spec_dir.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }


async def run_story(
    hw: HeadwaterClient,
    console: Console,
    days: list[str],
    work: Path,
    on_step: Callable[[Step], None] | None = None,
) -> Story:
    """Tell the story on a running stack over `days` (from 2013-01-01), in `work`."""
    story = Story(days, work, console)
    tell = Teller(hw, story, on_step)
    corrected = days[len(days) // 2]
    say = console.print

    say(
        f"\n[bold]The example pipeline[/bold] ({example.EXAMPLE_DIR}), over {len(days)} day(s) "
        f"of 2013 NYC flights from {days[0]}, in {work}"
    )
    # The sources first, then the datasets: the full load then sees every day at once.
    await hw.apply(story.write_spec(LATE_AT_ANY_DELAY, sources_only=True))
    async with tell.step(
        f"land the sources: airlines and airports (unpartitioned, key {UNPARTITIONED_KEY!r}), "
        f"flights and weather for {len(days)} day(s) ({corrected} sent early: flights before "
        f"{example.EARLY_HOUR}:00 only)"
    ):
        for name in example.UNPARTITIONED:
            await tell.land(name, UNPARTITIONED_KEY, example.table(name))
        for day in days:
            await tell.land("weather", day, example.day_table("weather", day))
            await tell.land(
                "flights", day, example.day_table("flights", day, early=day == corrected)
            )

    async with tell.step("full load: apply the pipeline (a departure is late past 0 minutes)"):
        await hw.apply(story.write_spec(LATE_AT_ANY_DELAY))

    spec = story.write_spec()
    plan = await hw.plan(spec)
    will_run = {c["dataset"]: len(c["run"]) for c in plan["changes"] if c["run"]}
    async with tell.step(
        "a real SQL change: late means past 15 minutes (sql/carrier_delays.sql); plan: "
        + _listed(will_run)
        + "".join(f", then up to {len(k)} of {d}" for d, k in plan["downstream"].items())
    ):
        await hw.apply(spec)

    async with tell.step("a comment-only change (and formatting) to the same SQL: nothing runs"):
        await hw.apply(story.write_spec(COMMENT_ONLY))

    async with tell.step(f"a corrected day: {corrected}'s complete flights re-landed"):
        await tell.land("flights", corrected, example.day_table("flights", corrected))

    async with tell.step(
        "a Python change that fails for one partition: weather_daily adds the noon temperature,"
        " as if every airport reported at noon"
    ):
        await hw.apply(story.write_spec(IMPORT_PC, NOON_FAILS))
    step = story.steps[-1]
    if step.counts.errored:
        errored = (await hw.summary(errored=5))["errored"]
        for p in errored:
            error = (p.get("error") or "").strip().splitlines()
            say(f"    {p['dataset']}/{p['partition_key']}: {escape(error[-1] if error else '?')}")
            story.failing_day = story.failing_day or p["partition_key"]

    async with tell.step(
        "the fix (no reading at noon: null): only what failed or was blocked resumes"
    ):
        await hw.apply(story.write_spec(IMPORT_PC, NOON_FIXED))

    async with tell.step(
        "a revert to the example as shipped: nothing runs, earlier outputs are current"
    ):
        await hw.apply(story.write_spec())

    await show_scorecard(hw, console)
    return story


def _listed(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{d} {n}" for d, n in sorted(counts.items()) if n) + ")"


class Teller:
    """Runs one step at a time: watches the events it causes, waits until the stack is idle,
    and prints and records what happened."""

    def __init__(
        self, hw: HeadwaterClient, story: Story, on_step: Callable[[Step], None] | None
    ) -> None:
        self.hw, self.story, self.on_step = hw, story, on_step
        self.ran: dict[str, set[str]] = {}
        self.failed: dict[str, set[str]] = {}
        self.sources: Counter[str] = Counter()
        self.title = ""

    def step(self, title: str) -> "Teller":
        self.title = title
        return self

    async def land(self, dataset: str, key: str, rows: Any) -> None:
        path = self.story.files_dir / dataset / f"{key}.csv"
        example.write_csv(rows, path)
        self.story.landed.setdefault(dataset, {})[key] = path.read_bytes()
        # Named as `headwater publish DATASET DIR` names it, so landing the same day by hand
        # later replaces this file (a second name would be a second file of the partition).
        await self.hw.publish(dataset, key, path, name=path.name)

    async def __aenter__(self) -> "Teller":
        self.ran, self.failed, self.sources = {}, {}, Counter()
        self.before = await _partitions(self.hw)
        self.sub = await self.hw.nc.subscribe(self.hw.subjects.events_all, cb=self._event)
        return self

    async def _event(self, msg: Msg) -> None:
        kind = msg.subject.split(".")
        dataset = kind[-1]
        body = json.loads(msg.data)
        if ".ev.partition.landed." in msg.subject:
            if body.get("inputs"):
                self.ran.setdefault(dataset, set()).add(body["fingerprint"])
            else:
                self.sources[dataset] += 1
        elif ".ev.task.failed." in msg.subject:
            self.failed.setdefault(dataset, set()).add(body["fingerprint"])

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            await self.sub.unsubscribe()
            return
        await self.hw.wait_idle(timeout=600)
        await self.hw.nc.flush()  # every event published before idle has reached us
        await asyncio.sleep(0)
        await self.sub.unsubscribe()
        after = await _partitions(self.hw)
        counts = Counts(
            landed=dict(self.sources),
            ran={d: len(f) for d, f in self.ran.items()},
            failed={d: len(f) for d, f in self.failed.items()},
        )
        computed = set().union(*self.ran.values()) if self.ran else set()
        tally: dict[str, Counter[str]] = {
            k: Counter() for k in ("reused", "resumed", "errored", "blocked")
        }
        for (dataset, key), now in after.items():
            was = self.before.get((dataset, key))
            if now["state"] in ("errored", "blocked"):
                tally[now["state"]][dataset] += 1
            if now["state"] != "ready" or now["kind"] == "source":
                continue
            if was is not None and was["state"] in ("errored", "blocked"):
                tally["resumed"][dataset] += 1
            elif (
                was is not None
                and was["fingerprint"] != now["fingerprint"]
                and now["fingerprint"] not in computed
            ):
                tally["reused"][dataset] += 1
        for name, found in tally.items():
            setattr(counts, name, dict(found))
        step = Step(
            self.title,
            counts,
            self.story.files(),
            {d: dict(k) for d, k in self.story.landed.items()},
        )
        self.story.steps.append(step)
        self.print(step)
        if self.on_step is not None:
            self.on_step(step)

    def print(self, step: Step) -> None:
        c = step.counts
        n = len(self.story.steps)
        say = self.story.console.print
        say(f"\n[bold cyan]{n}.[/bold cyan] {escape(step.title)}", highlight=False)
        if c.landed:
            say(f"   landed {_listed(c.landed)}", highlight=False)
        failed = sum(c.failed.values())
        say(
            f"   ran {_listed(c.ran)}" + (f", failed {_listed(c.failed)}" if failed else ""),
            highlight=False,
        )
        for label in ("reused", "resumed", "errored", "blocked"):
            found: dict[str, int] = getattr(c, label)
            if found:
                say(f"   {label} {_listed(found)}", highlight=False)


async def _partitions(hw: HeadwaterClient) -> dict[tuple[str, str], dict[str, Any]]:
    """Every partition's state and current fingerprint, with its dataset's kind."""
    kinds = {d["dataset"]: d["kind"] for d in (await hw.summary(errored=0))["datasets"]}
    return {
        (p["dataset"], p["partition_key"]): {**p, "kind": kinds.get(p["dataset"])}
        for p in (await hw.status())["partitions"]
    }


async def show_scorecard(hw: HeadwaterClient, console: Console) -> dict[str, Any]:
    """Print where the scorecard landed and its first rows; return its partition."""
    listing = await hw.partitions("carrier_scorecard", limit=1)
    rows = listing["partitions"]
    if not rows or rows[0]["state"] != "ready":
        raise InputError("example", f"carrier_scorecard/{UNPARTITIONED_KEY} is not ready: {rows}")
    p: dict[str, Any] = rows[0]
    s = hw.settings
    where = (
        f"{s.store_dir}/{s.data_bucket}/{p['object_key']}"
        if s.store_dir
        else f"s3://{s.data_bucket}/{p['object_key']}"
    )
    scorecard = formats.from_parquet(await open_store(s).get(s.data_bucket, p["object_key"]))
    table = Table(title="carrier_scorecard: the best on-time departures")
    shown = ("rank", "airline", "flights", "on_time_share", "avg_dep_delay")
    for column in shown:
        table.add_column(column)
    for row in sorted(scorecard.to_pylist(), key=lambda r: r["rank"])[:5]:
        table.add_row(*(str(row[c]) for c in shown))
    console.print()
    console.print(table)
    console.print(
        f"[bold green]carrier_scorecard/{p['partition_key']}[/bold green] is {p['state']}: "
        f"{p['rows']} rows, data SHA {p['data_sha'][:12]}, stored at {where}"
    )
    return p
