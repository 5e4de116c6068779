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
from headwater.sdk.embedded import EmbeddedStack, StackSettings
from headwater.sdk.example import flights
from tests.fixtures.servers import S3Endpoint

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
        out = []
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            out.append(f"==== {path.name}\n{path.read_text()[-4000:]}")
        return "\n".join(out)


def stack_settings(namespace: str, nats_url: str, dsn: str, s3: S3Endpoint | None) -> StackSettings:
    values: dict[str, object] = {
        "namespace": namespace,
        "nats_url": nats_url,
        "pg_dsn": dsn,
        "landing_bucket": f"{namespace}-landing",
        "data_bucket": f"{namespace}-data",
        "code_bucket": f"{namespace}-code",
    }
    if s3 is not None:
        values.update(
            s3_endpoint=s3.url,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_region=s3.region,
        )
    return StackSettings.model_validate(values)


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
    embedded = EmbeddedStack(
        tmp_path / "state",
        stack_settings(namespace, nats_url, database, s3),
        service_env={"HEADWATER_RECONCILE_INTERVAL_S": "2"},
        log_to_files=True,
    )
    embedded.start()
    running = RunningStack(embedded, embedded.state_dir, request.param)
    try:
        async with running.client() as hw:
            await hw.ready(timeout=60)
        yield running
    finally:
        embedded.stop()
        print(running.logs())  # shown by pytest only when the test failed
