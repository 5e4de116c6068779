"""The embedded stack as OS processes, on the session's real servers, isolated per test by
namespace (streams, subjects), database (schemas) and buckets or directory (objects)."""

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.runtime.settings import ServiceSettings
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack
from headwater.sdk.example import flights
from tests.fixtures.servers import S3Endpoint
from tests.fixtures.stack import logs, stack_settings, started

ROOT = Path(__file__).resolve().parents[2]
# The thinnest pipeline (one source, one SQL dataset): the tests of one slice through the
# services use it; the example pipeline (examples/flights) has its own test (test_demo.py).
SLICE = ROOT / "tests" / "e2e" / "slice" / "pipeline.yaml"


@cache
def all_flights() -> pa.Table:
    return flights()


@dataclass
class RunningStack:
    stack: EmbeddedStack
    state_dir: Path
    store_kind: str

    @property
    def settings(self) -> ServiceSettings:
        return load_settings(self.state_dir)

    def client(self) -> HeadwaterClient:
        return HeadwaterClient(self.settings)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `headwater` CLI against this stack, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "headwater.sdk", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            check=check,
            cwd=ROOT,
            timeout=120,
        )

    def logs(self) -> str:
        return logs(self.state_dir)


@pytest.fixture(params=["local", "s3"])
async def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    namespace: str,
    nats_url: str,
    database: str,
    s3_endpoint: S3Endpoint,
) -> AsyncIterator[RunningStack]:
    """The five services as processes; parametrized over the local-directory store and S3."""
    s3 = s3_endpoint if request.param == "s3" else None
    settings = stack_settings(namespace, nats_url, database, s3)
    env = {"HEADWATER_RECONCILE_INTERVAL_S": "2"}
    async with started(tmp_path / "state", settings, env) as embedded:
        yield RunningStack(embedded, embedded.state_dir, request.param)
