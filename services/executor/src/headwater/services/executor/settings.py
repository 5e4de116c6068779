"""executor settings."""

from pydantic import Field

from headwater.runtime.settings import ServiceSettings


class ExecutorSettings(ServiceSettings):
    """Heartbeats while a task runs, and the retry policy for a transform that raises:
    `attempts` runs in all, waiting `retry_base_s * 2**(n-1)` (at most `retry_cap_s`) between.

    Each transform runs in one of `transform_workers` worker processes, stopped after `task_timeout_s`
    or when it takes `task_memory_mb` more memory than the idle worker (0: no limit); a
    dataset's own `timeout`/`memory_mb` take precedence. A running task looks for its
    cancellation every `cancel_poll_s`. Up to `executor_concurrency` tasks are in flight at
    once (default: one per worker); a task past the workers' number reads its inputs, then
    waits for a free worker."""

    heartbeat_s: float = 10.0
    task_timeout_s: float = Field(default=3600.0, gt=0)
    task_memory_mb: int = Field(default=4096, ge=0)
    transform_workers: int = Field(default=2, ge=1, le=256)
    executor_concurrency: int | None = Field(default=None, ge=1, le=1024)
    cancel_poll_s: float = Field(default=1.0, gt=0)
    attempts: int = Field(default=3, ge=1, le=100)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=60.0, ge=0)

    @property
    def concurrency(self) -> int:
        """How many tasks one executor process runs at once."""
        return self.executor_concurrency or self.transform_workers
