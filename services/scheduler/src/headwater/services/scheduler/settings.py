"""scheduler settings."""

from headwater.runtime.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """How often the scheduler re-derives everything from stored facts, and retries."""

    reconcile_interval_s: float = 10.0
    max_attempts: int = 3
