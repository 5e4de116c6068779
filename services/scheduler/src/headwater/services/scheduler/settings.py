"""scheduler settings."""

from pydantic import Field

from headwater.runtime.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """How often the scheduler re-derives everything from stored facts, and how long a task
    may go unanswered before it is sent again (a lost message delays work, never loses it)."""

    reconcile_interval_s: float = 10.0
    # How often held computations (a dataset's `settle:`) are looked at: a settle delay is
    # kept to within this.
    settle_poll_s: float = Field(default=1.0, gt=0)
    task_resend_s: float = 300.0
    # Events handled together (one pull, one transaction, one reconcile).
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Processed event ids are kept this long: a redelivery (a lost ack, a re-published result,
    # a replayed dead letter) within it is recognised; past it, effects are idempotent anyway.
    inbox_retention_s: float = Field(default=7 * 24 * 3600.0, ge=120.0)
