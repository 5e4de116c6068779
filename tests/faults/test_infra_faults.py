"""Infrastructure faults mid-burst: nats-server SIGKILLed, Postgres stopped immediately, S3
blackholed. Each test brings servers of its own to break (never the session's, which other
tests share), lands a burst of days while the fault happens, and ends with `converged()`:
content equals the oracle's, one materialization per fingerprint, no acknowledged landing lost.
Each also checks that the fault really happened, so none can pass vacuously."""

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.servers import NatsServer, PostgresServer
from tests.faults.harness import FaultStack, days
from tests.faults.proxy import TcpProxy
from tests.fixtures.servers import S3Endpoint, with_database
from tests.fixtures.stack import stack_settings

pytestmark = pytest.mark.timeout(240)

DAYS = days(12)
FAULT_AFTER = 4  # landings acknowledged before the fault strikes
PACE_S = 0.15  # between landings: the services are busy with the last one when it strikes
OUTAGE_S = 1.5  # how long a killed server stays down
BLACKHOLE_S = 5.0
# The services' S3 timeout: short enough that a request caught by the blackhole exhausts its
# three tries (urllib3's retries) within it, so the failure reaches the handler, which naks.
SERVICE_S3_TIMEOUT_S = 1
CLIENT_S3_TIMEOUT_S = 3


@contextlib.asynccontextmanager
async def running(stack: FaultStack, *others: Path) -> AsyncIterator[FaultStack]:
    """Start the stack; stop it whatever happens, printing its logs (shown on failure)."""
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()
        if stack.stack is not None:
            print(stack.logs())
        for path in others:
            if path.exists():
                print(f"==== {path.name}\n{path.read_text(errors='replace')[-3000:]}")


async def burst(
    stack: FaultStack, hw: HeadwaterClient, fault: Callable[[], Awaitable[None]]
) -> None:
    """Land every day in order, PACE_S apart; `fault` strikes as soon as the FAULT_AFTER-th
    is acknowledged, and the landings go on (`land()` retries through the outage)."""
    task: asyncio.Task[None] | None = None
    try:
        for i, day in enumerate(DAYS, 1):
            await stack.land(hw, day)
            if i == FAULT_AFTER:
                # Strike at once, while the services handle this landing.
                task = asyncio.create_task(fault())
            await asyncio.sleep(PACE_S)
        assert task is not None
        await task
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert sorted(stack.landed) == DAYS


async def settled(stack: FaultStack, hw: HeadwaterClient) -> None:
    """Wait for quiet; nothing may have been dead-lettered (an outage is not bad input, and a
    dead-lettered landing is a lost one), then check convergence."""
    await hw.wait(timeout=180)
    letters = await hw.dead_letters()
    assert letters == [], "an outage dead-lettered messages:\n" + "\n".join(
        f"{d['service']} {d['subject']} ({d['field']}: {d['reason']}) {d['payload']}"
        for d in letters
    )
    await stack.converged(hw)


def service_logs(stack: FaultStack) -> dict[str, str]:
    logs = stack.embedded.state_dir / "logs"
    return {p.stem: p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))}


async def test_nats_server_killed_mid_burst_loses_and_duplicates_nothing(
    tmp_path: Path, namespace: str, database: str
) -> None:
    nats = NatsServer(tmp_path / "nats", log_path=tmp_path / "nats-server.log")
    nats.start()
    try:
        # A task whose ack died with the server is redelivered after the ack wait: keep it
        # short, so the wait for quiet does not sit out the default minute.
        env = {"HEADWATER_TASK_ACK_WAIT_S": "5"}
        stack = FaultStack(tmp_path, stack_settings(namespace, nats.url, database, None), env)
        async with running(stack, tmp_path / "nats-server.log"):
            pids: list[int | None] = [nats.pid]

            async def fault() -> None:
                nats.kill()  # SIGKILL, as a crash would
                await asyncio.sleep(OUTAGE_S)
                nats.start()  # same store dir, same port
                pids.append(nats.pid)

            async with stack.client() as hw, stack.supervised():
                started = time.monotonic()
                await burst(stack, hw, fault)
                landing_took = time.monotonic() - started
                await settled(stack, hw)
                connected = await asyncio.to_thread(connection_names, nats)
            logs = service_logs(stack)
    finally:
        nats.stop()
    # The fault happened: a second server process served the same port and store...
    assert len(pids) == 2
    assert None not in pids
    assert pids[0] != pids[1]
    assert nats.log_path is not None
    assert nats.log_path.read_text().count("Server is ready") == 2
    # ...the services lost their connections (FastStream logs an EOF; a reset goes unlogged)
    # and every one of them reconnected to the new server...
    assert any("Connection broken" in log for log in logs.values())
    assert {f"headwater-{name}" for name in logs} <= connected, connected
    # ...and the landings went on through the outage (land() retried until it came back).
    assert landing_took > OUTAGE_S


def connection_names(nats: NatsServer) -> set[str]:
    """The names of the clients connected to `nats` (its monitoring endpoint)."""
    with urllib.request.urlopen(f"{nats.monitor_url}/connz?limit=1024", timeout=5) as resp:
        data = json.load(resp)
    return {c.get("name", "") for c in data.get("connections", [])}


@contextlib.asynccontextmanager
async def own_postgres(tmp_path: Path, namespace: str) -> AsyncIterator[tuple[PostgresServer, str]]:
    """A Postgres of the test's own (to break), with a database for the stack; stopped after."""
    pg = PostgresServer(tmp_path / "pg", log_path=tmp_path / "postgres.log")
    pg.start()
    try:
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{namespace}"')
        finally:
            await conn.close()
        yield pg, with_database(pg.dsn, namespace)
    finally:
        pg.stop()


async def test_postgres_stopped_immediately_mid_burst_loses_and_duplicates_nothing(
    tmp_path: Path, namespace: str, nats_url: str
) -> None:
    async with own_postgres(tmp_path, namespace) as (pg, dsn):
        stack = FaultStack(tmp_path, stack_settings(namespace, nats_url, dsn, None))
        async with running(stack, tmp_path / "postgres.log"):
            pids: list[int | None] = [pg.pid]

            async def fault() -> None:
                pg.stop_immediate()  # SIGQUIT: open transactions die, no checkpoint
                await asyncio.sleep(OUTAGE_S)
                pg.start()  # same data dir and port: crash recovery
                pids.append(pg.pid)

            async with stack.client() as hw, stack.supervised():
                await burst(stack, hw, fault)
                await settled(stack, hw)
            logs = service_logs(stack)
    # The fault happened: a new postmaster recovered from an unclean shutdown...
    assert len(pids) == 2
    assert None not in pids
    assert pids[0] != pids[1]
    pg_log = (tmp_path / "postgres.log").read_text(errors="replace")
    assert "automatic recovery in progress" in pg_log
    # ...and the services saw it (their Postgres work failed and was retried).
    assert any("will retry" in log for log in logs.values())


# The consumers once had max_deliver 10: a message's 10th failed delivery dead-lettered it, so
# a long outage lost valid landings (with the production backoff, 0.5 s doubling to 30 s, ~121 s
# into it). Retries now have no end. The stack here redelivers on that schedule capped at
# REDELIVERY_CAP_S, which brings the old limit to OLD_WINDOW_S (8.5 s) into an outage; the
# outage lasts more than three times that, and each landing fails many more deliveries than
# the old limit before the database is back.
OLD_MAX_DELIVER = 10
REDELIVERY_BASE_S = 0.5  # the production default
REDELIVERY_CAP_S = 1.0
OLD_WINDOW_S = sum(
    min(REDELIVERY_CAP_S, REDELIVERY_BASE_S * 2**n) for n in range(OLD_MAX_DELIVER - 1)
)
LONG_OUTAGE_S = 30.0


async def test_postgres_down_longer_than_any_retry_window_loses_no_acknowledged_event(
    tmp_path: Path, namespace: str, nats_url: str
) -> None:
    env = {
        "HEADWATER_REDELIVERY_BASE_S": str(REDELIVERY_BASE_S),
        "HEADWATER_REDELIVERY_CAP_S": str(REDELIVERY_CAP_S),
    }
    async with own_postgres(tmp_path, namespace) as (pg, dsn):
        stack = FaultStack(tmp_path, stack_settings(namespace, nats_url, dsn, None), env)
        async with running(stack, tmp_path / "postgres.log"):
            async with stack.client() as hw, stack.supervised():
                await stack.land(hw, DAYS[0])
                await hw.wait(timeout=120)
                pg.stop()
                down_at = time.monotonic()
                # Every landing is acknowledged by JetStream while the database is down.
                for day in DAYS[1:6]:
                    await stack.land(hw, day)
                await asyncio.sleep(LONG_OUTAGE_S - (time.monotonic() - down_at))
                pg.start()
                outage = time.monotonic() - down_at
                await settled(stack, hw)
            logs = service_logs(stack)
    assert outage >= LONG_OUTAGE_S > 3 * OLD_WINDOW_S
    assert sorted(stack.landed) == DAYS[:6]
    # The services' Postgres work failed for the whole outage and was retried, not dropped: the
    # five landings made during it failed, between them, more deliveries than the old limit let
    # five messages fail (each about LONG_OUTAGE_S / REDELIVERY_CAP_S times).
    naks = logs["change-detector"].count(f"will retry {namespace}.upstream.sales ")
    assert naks >= 5 * OLD_MAX_DELIVER, naks


async def test_s3_blackholed_mid_burst_loses_and_duplicates_nothing(
    tmp_path: Path, namespace: str, nats_url: str, database: str, s3_endpoint: S3Endpoint
) -> None:
    target = urlsplit(s3_endpoint.url)
    assert target.hostname is not None
    assert target.port is not None
    with TcpProxy(target.hostname, target.port) as proxy:
        s3 = S3Endpoint(
            proxy.url, s3_endpoint.access_key, s3_endpoint.secret_key, s3_endpoint.region
        )
        stack = FaultStack(
            tmp_path,
            stack_settings(namespace, nats_url, database, s3),
            {"HEADWATER_S3_TIMEOUT_S": str(SERVICE_S3_TIMEOUT_S)},
        )
        async with running(stack):
            took: list[float] = []

            async def fault() -> None:
                start = time.monotonic()
                proxy.blackhole(True)
                await asyncio.sleep(BLACKHOLE_S)
                proxy.blackhole(False)
                took.append(time.monotonic() - start)

            # The client writes the landing files through the proxy too: a short timeout
            # turns a stalled write into an error that land() retries.
            settings = load_settings(stack.embedded.state_dir)
            client = HeadwaterClient(
                settings.model_copy(update={"s3_timeout_s": CLIENT_S3_TIMEOUT_S})
            )
            async with client as hw, stack.supervised():
                await burst(stack, hw, fault)
                await settled(stack, hw)
            logs = service_logs(stack)
            stats = proxy.stats
    # The fault happened: traffic was swallowed, connections stalled and were cut.
    assert took
    assert took[0] >= BLACKHOLE_S
    assert stats.swallowed_bytes > 0, stats
    assert stats.stalled >= 1, stats
    assert stats.dropped >= 1, stats
    # ...and a service's own S3 request failed on it and was retried (the landing it was
    # processing when the blackhole began).
    retried = [n for n, log in logs.items() if f"object storage {proxy.url}" in log]
    assert retried, f"no service log shows an S3 failure through the proxy ({stats})"
