"""What is read is checked against its SHA (DESIGN.md §2, invariant 8): an input object that is
missing, or holds other content than its data SHA, is never computed over. A derived one is
recomputed and its reader resumes; a source one errors its reader with the object and the
reason, and landing the source again plus `retry` resumes it. Nothing waits forever."""

from typing import Any

import asyncpg
import pytest

from headwater.runtime.objectstore import ObjectStore, open_store
from headwater.sdk.client import HeadwaterClient
from tests.faults.harness import SPEC, FaultStack

pytestmark = pytest.mark.timeout(240)
D1, D2 = "2024-05-01", "2024-05-02"


def partition(status: dict[str, Any], dataset: str, key: str) -> dict[str, Any]:
    return next(
        p for p in status["partitions"] if p["dataset"] == dataset and p["partition_key"] == key
    )


def objects(stack: FaultStack) -> tuple[ObjectStore, str]:
    settings = stack.client().settings
    return open_store(settings), settings.data_bucket


async def task_attempts(stack: FaultStack, dataset: str, key: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT state, attempts FROM scheduler.tasks WHERE dataset = $1 AND partition_key = $2"
            " ORDER BY requested_at",
            dataset,
            key,
        )
    finally:
        await conn.close()
    return [(r["state"], r["attempts"]) for r in rows]


async def two_days(stack: FaultStack, hw: HeadwaterClient) -> dict[str, Any]:
    for day in (D1, D2):
        await stack.land(hw, day)
    return await hw.wait(timeout=120)


async def test_a_missing_derived_object_is_recomputed_and_its_reader_resumes(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    store, bucket = objects(stack)
    async with stack.client() as hw:
        status = await two_days(stack, hw)
        lost = partition(status, "daily", D1)["object_key"]
        await store.delete(bucket, lost)
        # A new version of D2: pairs/D2 must read daily/D1 again, whose object is gone.
        await stack.land(hw, D2, salt=1)
        await stack.converged(hw)
        why = await hw.why("daily", D1)
    assert await store.exists(bucket, lost)  # written anew by the recomputation
    # daily/D1 ran twice for one fingerprint: once, and once as the repair.
    assert await task_attempts(stack, "daily", D1) == [("succeeded", 2)]
    assert [m["fingerprint"] for m in why["materializations"]] == [why["partition"]["fingerprint"]]
    executor = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
    assert f"pairs/{D2} cannot run: input daily/{D1}: object {lost} is missing" in executor


async def test_a_damaged_derived_object_is_never_read_as_its_sha(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    store, bucket = objects(stack)
    async with stack.client() as hw:
        status = await two_days(stack, hw)
        swapped = partition(status, "daily", D1)["object_key"]
        other = partition(status, "daily", D2)["object_key"]
        assert swapped != other
        # Another valid Parquet object under daily/D1's key: readable, but not its content.
        await store.put(bucket, swapped, await store.get(bucket, other))
        await stack.land(hw, D2, salt=1)
        # Content equal to a from-scratch run: pairs/D2 was not computed over the swap.
        await stack.converged(hw)
    assert await task_attempts(stack, "daily", D1) == [("succeeded", 2)]
    executor = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
    assert f"object {swapped} does not hold data SHA" in executor


async def test_a_missing_source_object_errors_its_reader_until_landed_again(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    store, bucket = objects(stack)
    async with stack.client() as hw:
        status = await two_days(stack, hw)
        lost = partition(status, "sales", D1)["object_key"]
        await store.delete(bucket, lost)
        # A code change: daily/D1 must read sales/D1 again.
        changed = SPEC.replace("sum(amount) AS total", "sum(amount) AS total, max(amount) AS top")
        (stack.root / "pipeline.yaml").write_text(changed)
        await hw.apply(stack.root / "pipeline.yaml")
        status = await hw.wait(timeout=120)  # returns: nothing is left queued
        errored = partition(status, "daily", D1)
        assert errored["state"] == "errored"
        assert f"input sales/{D1}: object {lost} is missing" in errored["error"]
        assert partition(status, "pairs", D2)["state"] == "blocked"
        why = await hw.why("daily", D1)
        assert f"object {lost} is missing" in why["task"]["error"]

        # The fix: land the same file again (its object is restored), then retry.
        path = stack.root / f"{D1}-0.csv"
        await hw.publish("sales", D1, path, name="sales.csv", event_id=f"{D1}:again")
        await hw.wait(timeout=60)
        assert await store.exists(bucket, lost)
        await hw.retry("daily", D1)
        await stack.converged(hw)
