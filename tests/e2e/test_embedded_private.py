"""`headwater up` as a user runs it, against the faults of issue 8 (findings 4 and 7): it
restarts the nats-server and Postgres it started when they die; a second `up` on a live state
directory refuses; what it starts is private (Postgres and NATS refuse a login without the
generated passwords, no secret in endpoints.json or in a service's environment beyond its own);
a process that crash-loops is given up on, and said so.

One `up` serves the module's tests of it; each leaves it healthy."""

import asyncio
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest

from headwater.sdk.embedded import EmbeddedStack, RestartPolicy
from tests.e2e.conftest import ROOT
from tests.e2e.test_embedded import _env, headwater
from tests.fixtures.stack import stack_settings

# One worker runs the module, so its `up` starts once (where xdist honours the group: see
# pyproject.toml; until then each worker that runs one of these tests starts an `up`).
pytestmark = [pytest.mark.timeout(240), pytest.mark.xdist_group("embedded_private")]


@dataclass
class Up:
    proc: subprocess.Popen[str]
    state: Path
    output: Path

    def endpoints(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "endpoints.json").read_text()))

    def secrets(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "secrets.json").read_text()))

    def children(self) -> dict[int, list[str]]:
        """The processes `up` started: pid -> argv."""
        found = {}
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rsplit(")", 1)[1].split()
                argv = (stat_file.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                found[int(stat_file.parent.name)] = [a.decode() for a in argv if a]
        return found

    def child(self, marker: str) -> int:
        pids = [pid for pid, argv in self.children().items() if any(marker in a for a in argv)]
        assert len(pids) == 1, f"{marker}: {self.children()}"
        return pids[0]

    def status_answers(self, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            result = headwater("status", "--json", state_dir=self.state, timeout=30)
            if result.returncode == 0:
                return dict(json.loads(result.stdout))
            assert time.monotonic() < deadline, result.stderr + self.output.read_text()
            time.sleep(0.5)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    state = root / "state"
    output = (root / "up.out").open("w")  # a file, not a pipe nobody reads while tests run
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater.sdk", "up", "--state-dir", str(state)],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    running = Up(proc, state, root / "up.out")
    try:
        # Up when it says so: it prints where its endpoints are once every service is ready
        # (the executors' workers warm), and only then supervises what it started. A server
        # killed before that is not restarted: `up` fails its start instead.
        deadline = time.monotonic() + 120
        while "endpoints in" not in running.output.read_text():
            assert proc.poll() is None, running.output.read_text()
            assert time.monotonic() < deadline, "`up` did not say it was up"
            time.sleep(0.2)
        running.status_answers()
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        output.close()
        print(running.output.read_text())  # shown by pytest only when a test failed


def test_a_dead_nats_server_and_postgres_are_restarted(up: Up) -> None:
    for server in ["nats-server", "bin/postgres"]:
        pid = up.child(server)
        os.kill(pid, signal.SIGKILL)
        # status asks the scheduler over NATS, and the scheduler reads Postgres.
        up.status_answers()
        assert up.child(server) != pid
    # The same data: the restarted Postgres serves the data directory `up` initialised.
    lock = (up.state / "postgres" / "postmaster.pid").read_text().split("\n")
    assert lock[:2] == [str(up.child("bin/postgres")), str(up.state / "postgres")]


def test_a_second_up_on_a_live_state_dir_refuses(up: Up) -> None:
    before = (up.state / "endpoints.json").read_text()
    second = headwater("up", state_dir=up.state, timeout=60)
    assert second.returncode == 1
    assert f"another `headwater up` (pid {up.proc.pid})" in " ".join(second.stderr.split())
    assert (up.state / "endpoints.json").read_text() == before
    assert (up.state / "headwater.pid").read_text().strip() == str(up.proc.pid)
    up.status_answers(timeout=10)


async def test_postgres_refuses_a_login_without_the_generated_password(up: Up) -> None:
    # The port from the server's own lock file (line 4), as a local intruder would find it.
    port = (up.state / "postgres" / "postmaster.pid").read_text().split("\n")[3]
    no_password = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(no_password, password="")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(no_password, password="wrong")
    admin = urlsplit(up.secrets()["cli"]["pg_dsn"])
    assert (admin.username, admin.port) == ("postgres", int(port))
    conn = await asyncpg.connect(up.secrets()["cli"]["pg_dsn"])
    await conn.close()

    # A service's role owns its schema only: no reading another's, no running programs.
    env = _environ(up.child("headwater.services.scheduler"))
    conn = await asyncpg.connect(env["HEADWATER_PG_DSN"])
    try:
        assert await conn.fetchval("SELECT current_user") == "scheduler"
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'scheduler'")
        assert await conn.fetchval("SELECT count(*) >= 0 FROM scheduler.partitions")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM spec_registry.schema_migrations")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TEMP TABLE t (x text); COPY t FROM PROGRAM 'id'")
    finally:
        await conn.close()


def test_a_service_environment_holds_its_own_credentials_only(up: Up) -> None:
    executor = _environ(up.child("headwater.services.executor"))
    assert "HEADWATER_PG_DSN" not in executor
    secrets = up.secrets()
    passwords = {*secrets["postgres"].values(), *secrets["nats"].values()}
    assert executor["HEADWATER_NATS_USER"] == "executor"
    assert passwords & set(executor.values()) == {secrets["nats"]["executor"]}
    scheduler = _environ(up.child("headwater.services.scheduler"))
    assert urlsplit(scheduler["HEADWATER_PG_DSN"]).username == "scheduler"
    leaked = [p for p in passwords - {secrets["nats"]["scheduler"]} if p in str(scheduler)]
    assert leaked == [secrets["postgres"]["scheduler"]]


async def test_nats_refuses_a_client_without_credentials(up: Up) -> None:
    url = up.endpoints()["nats_url"]
    intruder = nats.NATS()
    try:
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            await intruder.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    finally:
        await intruder.close()
    cli = up.secrets()["cli"]
    nc = await nats.connect(
        url, user=cli["nats_user"], password=cli["nats_password"], allow_reconnect=False
    )
    await nc.close()
    # An upstream system logs in as `upstream` (allowed the public contract only).
    upstream = up.secrets()["nats"]["upstream"]
    nc = await nats.connect(url, user="upstream", password=upstream, allow_reconnect=False)
    await nc.close()
    # No monitoring port (it has no login of its own).
    conf = (up.state / "nats" / "nats-server.conf").read_text()
    assert not re.search(r"^\s*http", conf, re.MULTILINE), conf


def test_no_secret_in_endpoints_and_secret_files_are_private(up: Up) -> None:
    assert not {"pg_dsn", "nats_password", "s3_secret_key"} & up.endpoints().keys()
    secrets = up.secrets()
    endpoints = (up.state / "endpoints.json").read_text()
    for password in [*secrets["postgres"].values(), *secrets["nats"].values()]:
        assert password not in endpoints
    private = [
        up.state / "secrets.json",
        up.state / "nats" / "nats-server.conf",
        *(up.state / "logs").glob("*.log"),
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def test_a_crash_looping_service_is_given_up_on_and_reported(
    tmp_path: Path,
    namespace: str,
    nats_url: str,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RestartPolicy(base_s=0.05, cap_s=0.2, window_s=60, max_restarts=3)
    stack = EmbeddedStack(
        tmp_path / "state",
        stack_settings(namespace, nats_url, database, None),
        # The executor refuses this setting (at least 1) and exits; the others ignore it.
        service_env={"HEADWATER_ATTEMPTS": "0"},
        log_to_files=True,
        restart_policy=policy,
    )
    stack.start()
    try:
        restarted: list[str] = []
        deadline = time.monotonic() + 60
        while "executor" not in stack.gave_up:
            assert time.monotonic() < deadline, restarted
            restarted += stack.supervise()
            await asyncio.sleep(0.05)
        assert restarted == ["executor"] * policy.max_restarts
        assert "executor crash-loops (3 restarts within 60s); not restarting it again" in [
            r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
        ]
        # It stays down; the other services keep running.
        assert stack.supervise() == []
        assert stack.processes["executor"].poll() is not None
        assert all(p.poll() is None for n, p in stack.processes.items() if n != "executor")
    finally:
        stack.stop()
