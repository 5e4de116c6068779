"""The fault-injection harness: a small pipeline on the embedded stack (services as real
processes), a supervisor that restarts what a fault killed, and the checks every fault test
ends with: content equals the oracle's, each fingerprint has exactly one materialization,
every fingerprint the oracle needed was computed, and no acknowledged landing is lost."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from headwater.core import formats
from headwater.core.spec import parse_pipeline
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack, StackSettings
from headwater.sdk.spec_files import read_document
from tests.fixtures.stack import launch, logs
from tests.oracle import Oracle, held_content
from tests.workloads import sales_csv

SPEC = """\
pipeline: faults
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region
    inputs: {sales: identity}
  pairs:
    sql: SELECT region, sum(total) AS total FROM daily GROUP BY region
    inputs: {daily: {mapping: window, size: 2}}
"""


def days(n: int) -> list[str]:
    return [f"2024-05-{d:02d}" for d in range(1, n + 1)]


@dataclass
class FaultStack:
    """The embedded stack for one fault test, with the pipeline applied."""

    root: Path
    settings: StackSettings
    service_env: dict[str, str] = field(default_factory=dict)
    spec: str = SPEC
    stack: EmbeddedStack | None = None
    landed: dict[str, bytes] = field(default_factory=dict)  # acknowledged landings, by day

    @property
    def embedded(self) -> EmbeddedStack:
        assert self.stack is not None
        return self.stack

    @property
    def pg_dsn(self) -> str:
        return self.embedded.admin_dsn

    def client(self) -> HeadwaterClient:
        return HeadwaterClient(load_settings(self.embedded.state_dir))

    async def start(self) -> None:
        env = {
            "HEADWATER_RECONCILE_INTERVAL_S": "2",
            "HEADWATER_FAILPOINTS_DIR": str(self.root / "failpoints"),
            **self.service_env,
        }
        (self.root / "failpoints").mkdir(parents=True, exist_ok=True)
        self.stack = launch(self.root / "state", self.settings, env)
        (self.root / "pipeline.yaml").write_text(self.spec)
        async with self.client() as hw:
            await hw.ready(timeout=60)
            await hw.apply(self.root / "pipeline.yaml")

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def logs(self) -> str:
        return logs(self.embedded.state_dir, tail=3000)

    @contextlib.asynccontextmanager
    async def supervised(self, interval: float = 0.2) -> AsyncIterator[None]:
        """Restart any service a fault killed, while the block runs (as `headwater up` does)."""

        async def loop() -> None:
            while True:
                self.embedded.supervise()
                await asyncio.sleep(interval)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def land(
        self, hw: HeadwaterClient, day: str, salt: int = 0, *, retry_for: float = 60
    ) -> None:
        """Land one day as an upstream system would: publish until JetStream acknowledges it
        (an outage makes the publish fail, never silently drop)."""
        data = sales_csv(day, salt)
        path = self.root / f"{day}-{salt}.csv"
        path.write_bytes(data)
        deadline = asyncio.get_running_loop().time() + retry_for
        while True:
            try:
                await hw.publish("sales", day, path, name="sales.csv", event_id=f"{day}:{salt}")
                break
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)
        self.landed[day] = data

    async def converged(self, hw: HeadwaterClient, timeout: float = 180) -> None:
        """Wait for quiet, then check convergence, one materialization per fingerprint,
        no lost landing, and minimality against the oracle."""
        status = await hw.wait(timeout=timeout)
        pipeline = parse_pipeline(read_document(self.root / "pipeline.yaml"))
        tables = {k: formats.read_table(v, "csv", k) for k, v in self.landed.items()}
        oracle = Oracle()
        expected = oracle.evaluate(pipeline, {"sales": tables})
        held = held_content(status)
        assert held == expected, "content differs from a from-scratch run"
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            dup = await conn.fetch(
                "SELECT fingerprint, count(*) FROM scheduler.materializations"
                " GROUP BY fingerprint HAVING count(*) > 1"
            )
            current = {
                r["fingerprint"]
                for r in await conn.fetch(
                    "SELECT m.fingerprint FROM scheduler.materializations m JOIN scheduler.partitions p"
                    " ON p.fingerprint = m.fingerprint WHERE m.code_sha IS NOT NULL"
                )
            }
        finally:
            await conn.close()
        assert dup == []  # exactly one materialization per fingerprint (a primary key, kept)
        assert {fp for _, _, fp in oracle.misses} == current, "a needed computation is missing"
