"""`headwater dlq replay`: dead letters are published again where they came from once the cause
is fixed, and the replayed input is processed as if it had just arrived (DESIGN.md §2,
invariant 5: dead letters can be replayed)."""

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningStack
from tests.workloads import sales_csv

pytestmark = pytest.mark.timeout(180)

SPEC = """\
pipeline: replay
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, sum(amount) AS total FROM sales GROUP BY region
    inputs: {sales: identity}
"""
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_landings_for_a_dataset_applied_later_are_replayed_after_the_fix(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Landings for a source no pipeline declares yet: bad input, dead-lettered.
    async with stack.client() as hw:
        for day in DAYS:
            path = tmp_path / f"{day}.csv"
            path.write_bytes(sales_csv(day))
            await hw.publish("sales", day, path, name="sales.csv", event_id=f"sales-{day}")
        letters = []
        while len(letters) < len(DAYS):
            letters = await hw.dead_letters()
    assert {(d["service"], d["field"]) for d in letters} == {("change-detector", "dataset")}
    first, *rest = (d["seq"] for d in letters)

    # The fix: apply the pipeline that declares the source. Nothing lands by itself.
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    stack.cli("apply", str(tmp_path / "pipeline.yaml"))
    async with stack.client() as hw:
        status = await hw.wait(timeout=60)
    assert status["partitions"] == []

    # Replay one letter by its id, then the rest by service.
    one = json.loads(stack.cli("dlq", "replay", str(first), "--json").stdout)
    assert [r["seq"] for r in one["replayed"]] == [first]
    others = stack.cli("dlq", "replay", "--service", "change-detector")
    assert f"{len(rest)} replayed, 0 skipped" in others.stdout

    async with stack.client() as hw:
        status = await hw.wait(timeout=120)
        left = await hw.dead_letters()
    states = {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}
    assert states == {(ds, day): "ready" for ds in ("sales", "daily") for day in DAYS}
    assert left == []  # replayed letters leave the dead-letter stream
    assert json.loads(stack.cli("dlq", "--json").stdout) == []


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_replaying_an_unknown_letter_names_it(stack: RunningStack) -> None:
    result = stack.cli("dlq", "replay", "999", check=False)
    assert result.returncode == 2
    assert "id: no dead letter with sequence 999" in result.stderr
