"""Settings shared by every service: where NATS, Postgres and object storage are.

Only pydantic-settings reads the environment (prefix HEADWATER_); each service subclasses
`ServiceSettings` with its own fields.
"""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.contracts import Subjects


class ServiceSettings(BaseSettings):
    """The connection settings every Headwater process reads."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_", extra="ignore", frozen=True)

    namespace: str = "hw"
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

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace)
