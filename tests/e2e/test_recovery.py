"""Error recovery through the running services: a failing transform is retried with
backoff, then its partition is `errored` (message and traceback kept) and what reads it
`blocked`; `retry` or a new code SHA resumes exactly those, and nothing that succeeded reruns."""

import io
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from tests.fixtures.stack import stack_settings, started

pytestmark = pytest.mark.timeout(240)

SPEC = """\
pipeline: fragile
sources:
  sales: {}
datasets:
  daily:
    python: daily.py:daily
    inputs: {sales: identity}
  pairs:
    sql: SELECT region, sum(amount) AS total FROM daily GROUP BY region
    inputs: {daily: {mapping: window, size: 2}}
"""
DAILY = """\
from pathlib import Path

import pyarrow as pa

FLAG = Path(%r)


def daily(sales: pa.Table) -> pa.Table:
    regions = sales.column("region").to_pylist()
    if "boom" in regions and FLAG.exists():
        raise ValueError("the boom region is not supported yet")
    return sales.group_by("region").aggregate([("amount", "sum")]).rename_columns(["region", "amount"])
"""
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]


def csv(rows: list[dict[str, object]]) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


async def tasks(dsn: str) -> dict[tuple[str, str], int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT dataset, partition_key, count(*) AS n FROM scheduler.tasks GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    return {(r["dataset"], r["partition_key"]): r["n"] for r in rows}


def states(status: dict[str, object]) -> dict[tuple[str, str], str]:
    return {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}  # type: ignore[attr-defined, index]


async def test_failures_retry_then_wait_and_a_fix_resumes_exactly_what_failed(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    flag = tmp_path / "failing"
    flag.touch()
    root = tmp_path / "pipeline"
    root.mkdir()
    (root / "pipeline.yaml").write_text(SPEC)
    (root / "daily.py").write_text(DAILY % str(flag))
    settings = stack_settings(namespace, nats_url, database, None)
    env = {"HEADWATER_ATTEMPTS": "3", "HEADWATER_RETRY_BASE_S": "0.1"}
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        await hw.apply(root / "pipeline.yaml")
        for day in DAYS:
            rows = [{"region": "north", "amount": 3}]
            if day == "2024-03-02":
                rows.append({"region": "boom", "amount": 1})
            path = tmp_path / f"{day}.csv"
            path.write_bytes(csv(rows))
            await hw.publish("sales", day, path)
        status = await hw.wait(timeout=120)

        # Retried with backoff, then errored; what reads it is blocked, the rest is ready.
        assert states(status) == {
            ("sales", "2024-03-01"): "ready",
            ("sales", "2024-03-02"): "ready",
            ("sales", "2024-03-03"): "ready",
            ("daily", "2024-03-01"): "ready",
            ("daily", "2024-03-02"): "errored",
            ("daily", "2024-03-03"): "ready",
            ("pairs", "2024-03-01"): "ready",
            ("pairs", "2024-03-02"): "blocked",
            ("pairs", "2024-03-03"): "blocked",
        }
        errored = next(p for p in status["partitions"] if p["state"] == "errored")
        assert errored["error"] == "ValueError: the boom region is not supported yet"
        why = await hw.why("daily", "2024-03-02")
        assert why["task"]["error"] == "ValueError: the boom region is not supported yet"
        assert 'raise ValueError("the boom region' in why["task"]["traceback"]
        history = await hw.call(
            "lineage-indexer", "history", {"dataset": "daily", "partition": "2024-03-02"}
        )
        failed = [e for e in history if e["kind"] == "task_failed"]
        assert len(failed) == 1
        assert '"attempt":3' in failed[0]["payload"].replace(" ", "")  # three runs, then it waits
        before = await tasks(stack.admin_dsn)

        # The cause goes away; `retry` resumes exactly the errored partition and what it blocked.
        flag.unlink()
        assert (await hw.retry("daily"))["retried"] == ["2024-03-02"]
        status = await hw.wait(timeout=120)
        assert set(states(status).values()) == {"ready"}
        after = await tasks(stack.admin_dsn)
        assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
            ("pairs", "2024-03-02"): 1,
            ("pairs", "2024-03-03"): 1,
        }
        with pytest.raises(Exception, match="is not errored"):
            await hw.retry("daily", "2024-03-01")

        # A new failure, fixed by new code: the new code SHA resumes the errored partition.
        flag.touch()
        path = tmp_path / "2024-03-04.csv"
        path.write_bytes(csv([{"region": "boom", "amount": 2}]))
        await hw.publish("sales", "2024-03-04", path)
        status = await hw.wait(timeout=120)
        assert states(status)[("daily", "2024-03-04")] == "errored"
        assert states(status)[("pairs", "2024-03-04")] == "blocked"
        (root / "daily.py").write_text((DAILY % str(flag)).replace("FLAG.exists()", "False"))
        await hw.apply(root / "pipeline.yaml")
        status = await hw.wait(timeout=120)
        assert set(states(status).values()) == {"ready"}
