"""The embedded stack: real nats-server and Postgres from their wheels (or servers named by
HEADWATER_NATS_URL / HEADWATER_PG_DSN), object storage in a local directory (or an S3
endpoint), and the five services, each its own OS process, all under one state directory."""

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.sdk.config import ENDPOINTS_FILE
from headwater.sdk.servers import NatsServer, PostgresServer, die_with_parent, free_port

SERVICES = {
    "spec-registry": "headwater.services.spec_registry",
    "change-detector": "headwater.services.change_detector",
    "scheduler": "headwater.services.scheduler",
    "executor": "headwater.services.executor",
    "lineage-indexer": "headwater.services.lineage_indexer",
}
_log = logging.getLogger(__name__)


class StackSettings(BaseSettings):
    """What `headwater up` reads: servers to use instead of starting its own."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_", extra="ignore")

    namespace: str = "hw"
    nats_url: str | None = None
    pg_dsn: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    landing_bucket: str = "landing"
    data_bucket: str = "headwater-data"
    code_bucket: str = "headwater-code"
    executors: int = 1


@dataclass
class EmbeddedStack:
    """Start with `start()`, stop with `stop()`; a restart on the same state dir keeps all data."""

    state_dir: Path
    settings: StackSettings = field(default_factory=StackSettings)
    service_env: dict[str, str] = field(default_factory=dict)
    log_to_files: bool = False
    nats: NatsServer | None = None
    postgres: PostgresServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / ENDPOINTS_FILE

    def start(self) -> dict[str, Any]:
        """Start servers and services; write and return the endpoints."""
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The last run's endpoints are stale (new ports) until this run has written its own.
        self.endpoints_path.unlink(missing_ok=True)
        s = self.settings
        nats_url = s.nats_url
        if nats_url is None:
            self.nats = NatsServer(
                self.state_dir / "nats",
                port=free_port(),
                log_path=self.state_dir / "logs" / "nats.log",
            )
            self.nats.start()
            nats_url = self.nats.url
        pg_dsn = s.pg_dsn
        if pg_dsn is None:
            self.postgres = PostgresServer(
                self.state_dir / "postgres",
                port=free_port(),
                log_path=self.state_dir / "logs" / "postgres.log",
            )
            self.postgres.start()
            pg_dsn = self.postgres.dsn
        endpoints: dict[str, Any] = {
            "namespace": s.namespace,
            "nats_url": nats_url,
            "pg_dsn": pg_dsn,
        }
        if s.s3_endpoint:
            endpoints.update(
                s3_endpoint=s.s3_endpoint,
                s3_access_key=s.s3_access_key,
                s3_secret_key=s.s3_secret_key,
                s3_region=s.s3_region,
            )
        else:
            endpoints["store_dir"] = str(self.state_dir / "objects")
        self.endpoints = endpoints
        for name in SERVICES:
            self._spawn(name)
        for i in range(1, s.executors):
            self._spawn("executor", suffix=f"-{i + 1}")
        self.endpoints_path.write_text(json.dumps(endpoints, indent=2) + "\n")
        return endpoints

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key, value in self.endpoints.items():
            if value is not None:
                env[f"HEADWATER_{key.upper()}"] = str(value)
        env.update(self.service_env)
        return env

    def _spawn(self, name: str, suffix: str = "") -> None:
        out: IO[bytes] | None = None
        if self.log_to_files:
            (self.state_dir / "logs").mkdir(exist_ok=True)
            out = (self.state_dir / "logs" / f"{name}{suffix}.log").open("ab")
            self._logs.append(out)
        self.processes[name + suffix] = subprocess.Popen(
            [sys.executable, "-m", SERVICES[name]],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # Ctrl-C reaches the CLI, which stops services in order
            preexec_fn=die_with_parent(),
        )

    def supervise(self) -> list[str]:
        """Restart any service that exited; returns the names restarted."""
        restarted = []
        for full, proc in list(self.processes.items()):
            if proc.poll() is not None:
                name = next(n for n in SERVICES if full.startswith(n))
                _log.warning("%s exited with %s; restarting it", full, proc.returncode)
                self._spawn(name, suffix=full[len(name) :])
                restarted.append(full)
        return restarted

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM every service, then stop the servers this stack started."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        if self.postgres is not None:
            self.postgres.stop()
        if self.nats is not None:
            self.nats.stop()
        for f in self._logs:
            f.close()
        self._logs.clear()
