"""scheduler settings."""

from headwater.runtime.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """How often the scheduler re-derives everything from stored facts."""

    reconcile_interval_s: float = 10.0
