"""executor settings."""

from pydantic import Field

from headwater.runtime.settings import ServiceSettings


class ExecutorSettings(ServiceSettings):
    """Heartbeats while a task runs, and the retry policy for a transform that raises:
    `attempts` runs in all, waiting `retry_base_s * 2**(n-1)` (at most `retry_cap_s`) between."""

    heartbeat_s: float = 10.0
    attempts: int = Field(default=3, ge=1, le=100)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=60.0, ge=0)
