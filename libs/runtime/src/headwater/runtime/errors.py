"""Headwater's error hierarchy. Every error says whether retrying can help.

HeadwaterError                 base; `retryable` decides nak-with-delay vs dead-letter
├── InputError                 permanent: bad input (names `field` and `reason`) -> dead-letter
│   (headwater.contracts.ContractError is its sibling from the contracts lib, also permanent)
├── TransientError             retryable: a server was unreachable, a timeout -> delayed nak
│   (headwater.sdk.client.StillBusy is one: `wait` ran out of time with work left)
└── TransformError             the user's transform raised; retried by the scheduler's policy
"""


class HeadwaterError(Exception):
    """Base of every Headwater error."""

    retryable: bool = False


class InputError(HeadwaterError):
    """Input that can never succeed as sent (unknown dataset, a file not in its format)."""

    retryable = False

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TransientError(HeadwaterError):
    """A dependency failed in a way that may pass (network, timeouts, a restarting server)."""

    retryable = True


class TransformError(HeadwaterError):
    """The user's transform failed; `traceback` keeps where."""

    retryable = True

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class RetryLater(TransientError):
    """Redeliver this message after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Superseded(HeadwaterError):
    """This delivery lost its lease to a newer one (it was paused past its ack deadline)."""
