"""Headwater's errors: one tree, rooted here (the lowest layer), so every library and service
raises and catches the same classes. Every error says whether trying again can help
(`retryable`), and a retryable one may say how long to wait (`retry_after`, seconds); a
consumer, the RPC responder and the CLI branch on that flag, not on lists of classes.

HeadwaterError                   retryable=False; `field` and `reason` say what and why
├── InputError(ValueError)       bad input, permanent: dead-lettered / refused, naming `field`
│   ├── headwater.core.errors.SpecError         a pipeline spec: file, dataset, field
│   ├── headwater.core.formats.FormatError      a file not in its format
│   │   └── SchemaMismatch                      a column that breaks the declared contract
│   ├── headwater.core.hashing.CodeError        code that cannot be read to hash it
│   ├── headwater.core.patterns.PatternError    a rollup pattern RE2 cannot run
│   ├── headwater.runtime.objectstore.ObjectNotFound
│   └── headwater.services.executor.inputs.InputDamaged   an input object is not its SHA
├── TransientError               retryable: a server unreachable, a timeout -> delayed nak
│   ├── RetryLater               with the delay to wait (`retry_after`)
│   └── headwater.sdk.client.StillBusy          `wait` ran out of time with work left
├── TransformError               retryable: the user's transform failed (the executor's policy)
├── Superseded                   this delivery lost its lease: leave the message to the newer
└── headwater.sdk: ServerError, StackError      the embedded stack could not start
"""


class HeadwaterError(Exception):
    """Base of every Headwater error."""

    retryable: bool = False
    retry_after: float | None = None  # seconds to wait before trying again (None: backoff)

    def reply(self) -> tuple[str, str]:
        """(field, reason) as a dead letter or an RPC error reply states them."""
        return "processing", str(self)


class InputError(HeadwaterError, ValueError):
    """Input that can never succeed as sent (a malformed event, an unknown dataset, a file
    not in its format): `field` names where, `reason` says why. The message is
    "FIELD: REASON" unless a subclass words it otherwise."""

    retryable = False
    field: str | None  # None only for a spec error about a whole file or dataset

    def __init__(self, field: str, reason: str, *, message: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if message is None else message)
        self.field = field
        self.reason = reason

    def reply(self) -> tuple[str, str]:
        return self.field or "input", self.reason


class TransientError(HeadwaterError):
    """A dependency failed in a way that may pass (network, timeouts, a restarting server)."""

    retryable = True


class RetryLater(TransientError):
    """Redeliver this message after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.retry_after = delay


class TransformError(HeadwaterError):
    """The user's transform failed; `traceback` keeps where. The executor retries it under
    its policy (attempts, backoff) before it reports the task failed."""

    retryable = True

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class Superseded(HeadwaterError):
    """This delivery lost its lease to a newer one (it was paused past its ack deadline):
    its message is the newer delivery's to settle."""
