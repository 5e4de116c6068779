"""scheduler settings."""

from headwater.runtime.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """How often the scheduler re-derives everything from stored facts, and how long a task
    may go unanswered before it is sent again (a lost message delays work, never loses it)."""

    reconcile_interval_s: float = 10.0
    task_resend_s: float = 300.0
