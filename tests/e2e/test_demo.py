"""`headwater demo`'s story on the example pipeline, through the running services: after
every step, the counts it prints (what ran, failed, was reused, resumed, errored, blocked)
are the oracle's, what the stack holds is the oracle's content, and what was dispatched
is exactly the oracle's cache misses."""

import io
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from rich.console import Console

from headwater.core import formats
from headwater.core.spec import Pipeline, parse_pipeline
from headwater.sdk.cli import DEMO_DAYS
from headwater.sdk.example import days
from headwater.sdk.spec_files import read_document
from headwater.sdk.story import Counts, Step, run_story
from tests.e2e.conftest import RunningStack
from tests.oracle import Oracle, held_content

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("stack", ["local"], indirect=True)]


class Expected:
    """The oracle beside the story: its counts for each step, as the story counts them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.oracle = Oracle()
        self.states: dict[tuple[str, str], str] = {}
        self.ready_fp: dict[tuple[str, str], str] = {}
        self.source_shas: dict[tuple[str, str], str] = {}
        self.held: dict[tuple[str, str], str] = {}

    def pipeline(self, step: Step) -> Pipeline:
        for name, text in step.files.items():
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            (self.root / name).write_text(text)
        return parse_pipeline(read_document(self.root / "pipeline.yaml"))

    def after(self, step: Step) -> Counts:
        pipeline = self.pipeline(step)
        sources: dict[str, dict[str, Any]] = {}
        for name, parts in step.sources.items():
            columns = pipeline.datasets[name].columns
            schema = formats.schema_of(columns) if columns else None
            sources[name] = {
                k: formats.read_table(data, "csv", f"{name}/{k}", schema)
                for k, data in parts.items()
            }
        start = len(self.oracle.misses)
        self.held = self.oracle.evaluate(pipeline, sources)
        new = self.oracle.misses[start:]
        failed = {fp for _, _, fp in new if isinstance(self.oracle.cache[fp], Exception)}
        counts = Counts(
            ran=dict(Counter(d for d, _, fp in new if fp not in failed)),
            failed=dict(Counter(d for d, _, fp in new if fp in failed)),
        )
        landed: Counter[str] = Counter()
        for (name, key), sha in self.held.items():
            if pipeline.datasets[name].kind == "source":
                if self.source_shas.get((name, key)) != sha:
                    landed[name] += 1
                self.source_shas[name, key] = sha
        counts.landed = dict(landed)
        computed = {fp for _, _, fp in new}
        tally: dict[str, Counter[str]] = {k: Counter() for k in ("reused", "resumed")}
        for part, state in self.oracle.states.items():
            was = self.states.get(part)
            if state in ("errored", "blocked"):
                getattr(counts, state)[part[0]] = getattr(counts, state).get(part[0], 0) + 1
                continue
            fp = self.oracle.fingerprints[part]
            if was in ("errored", "blocked"):
                tally["resumed"][part[0]] += 1
            elif was == "ready" and self.ready_fp[part] != fp and fp not in computed:
                tally["reused"][part[0]] += 1
            self.ready_fp[part] = fp
        counts.reused, counts.resumed = dict(tally["reused"]), dict(tally["resumed"])
        self.states = dict(self.oracle.states)
        return counts


async def test_the_demo_story_matches_the_oracle_at_every_step(
    stack: RunningStack, tmp_path: Path
) -> None:
    expected = Expected(tmp_path / "oracle")
    steps: list[tuple[Step, Counts]] = []

    def check(step: Step) -> None:
        steps.append((step, expected.after(step)))

    out = io.StringIO()
    console = Console(file=out, width=200)
    async with stack.client() as hw:
        story = await run_story(hw, console, days(DEMO_DAYS), tmp_path / "work", on_step=check)
        status = await hw.status()
        conn = await asyncpg.connect(stack.settings.pg_dsn)
        try:
            dispatched = await conn.fetch("SELECT dataset, fingerprint FROM scheduler.tasks")
        finally:
            await conn.close()

    printed = out.getvalue()
    for step, want in steps:
        assert step.counts.as_dict() == want.as_dict(), step.title
        assert f"ran {_listed(want.ran)}" in printed
    # Convergence: what is held at the end is the oracle's content; minimality: every
    # computation dispatched (the failed one included) is one of its cache misses, once.
    held = held_content(status)
    assert held == expected.held
    assert len({r["fingerprint"] for r in dispatched}) == len(dispatched)
    assert {(r["dataset"], r["fingerprint"]) for r in dispatched} == {
        (d, fp) for d, _, fp in expected.oracle.misses
    }

    # The story says what each step shows; the oracle agrees with these, and so does the stack.
    counts = [s.counts for s, _ in steps]
    landing, full, change, comment, corrected, failing, fix, revert = counts
    n = DEMO_DAYS
    assert landing.landed == {"airlines": 1, "airports": 1, "flights": n, "weather": n}
    assert sum(full.ran.values()) == 4 * n + 2  # four daily datasets, a month, the year
    assert set(change.ran) == {
        "carrier_delays",
        "carrier_delays_7d",
        "carrier_monthly",
        "carrier_scorecard",
    }
    assert comment.ran == {}
    assert corrected.landed == {"flights": 1}
    assert corrected.ran["flights_clean"] == 1
    assert "weather_daily" not in corrected.ran
    assert failing.errored == {"weather_daily": 1}
    assert failing.blocked["carrier_delays"] == 1
    assert story.failing_day == "2013-01-01"
    assert sum(fix.resumed.values()) == sum(failing.errored.values()) + sum(
        failing.blocked.values()
    )
    assert fix.errored == fix.blocked == {}
    assert revert.ran == {}
    assert revert.reused
    assert "carrier_scorecard/all is ready" in printed


def _listed(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{d} {n}" for d, n in sorted(counts.items()) if n) + ")"
