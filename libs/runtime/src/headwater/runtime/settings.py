"""Settings shared by every service: where NATS, Postgres and object storage are.

Only pydantic-settings reads the environment (prefix HEADWATER_); each service subclasses
`ServiceSettings` with its own fields.
"""

from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.contracts import Subjects

# Every secret in .env.example (and the Kubernetes example secrets) starts with this: a
# process given one refuses to start, so a stack copied from the examples never runs with
# passwords that are public.
PLACEHOLDER_PREFIX = "change-me"


class ServiceSettings(BaseSettings):
    """The connection settings every Headwater process reads."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_", extra="ignore", frozen=True)

    namespace: str = "hw"
    # Declare the JetStream topology at start (streams, consumers, buckets; idempotent). The
    # embedded stack does; a deployment whose services log in with least-privilege NATS users
    # sets it false and runs `python -m headwater.runtime.declare_topology` once, as an admin user,
    # before them (the services then wait for their consumers to exist).
    declare_topology: bool = True
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Object storage: an S3 endpoint when set, else a local directory.
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_timeout_s: float = 30.0
    store_dir: Path | None = None
    landing_bucket: str = "landing"
    data_bucket: str = "headwater-data"
    code_bucket: str = "headwater-code"
    log_level: str = "INFO"
    # Liveness (/livez) and readiness (/readyz) over HTTP on this port (Kubernetes probes);
    # unset: no health server. 0 picks a free port (tests).
    health_port: int | None = Field(default=None, ge=0, le=65535)
    health_host: str = "0.0.0.0"
    # How often the gauges (outbox backlog, consumer lag) are observed; the counters are live.
    metrics_interval_s: float = Field(default=15.0, gt=0)
    # How long an executor may hold a task without a heartbeat before it is redelivered.
    task_ack_wait_s: float = 60.0
    # ... and a service an event, before it goes to another replica (or the restarted one).
    event_ack_wait_s: float = 30.0
    # A message that failed for a passing reason is redelivered after `redelivery_base_s`,
    # doubling with each delivery up to `redelivery_cap_s`, for as long as it takes.
    redelivery_base_s: float = Field(default=0.5, gt=0)
    redelivery_cap_s: float = Field(default=30.0, gt=0)
    # Published outbox rows are kept this long (at least JetStream's 120 s duplicate window).
    outbox_retention_s: float = Field(default=3600.0, ge=120.0)
    # Fault injection for tests (see headwater.runtime.failpoints); empty in production.
    failpoints: str = ""
    failpoints_dir: Path | None = None

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> Self:
        """Refuse the example secrets, naming the variable that holds one."""
        prefix = self.model_config.get("env_prefix", "")
        secrets = {
            "nats_password": self.nats_password,
            "s3_secret_key": self.s3_secret_key,
            "pg_dsn": urlsplit(self.pg_dsn).password,
        }
        for name, value in secrets.items():
            if value and value.lower().startswith(PLACEHOLDER_PREFIX):
                raise ValueError(
                    f"{prefix}{name.upper()} holds the placeholder secret {value!r} from the "
                    "examples (.env.example): set a real one"
                )
        return self

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace)


def describe_invalid(exc: ValidationError) -> str:
    """A settings error without the input values, which may hold other (real) secrets."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(lines)
