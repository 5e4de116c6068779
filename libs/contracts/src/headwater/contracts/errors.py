"""The one error a contract raises: input that does not meet the contract.

ContractError is permanent (never retryable): the same bytes fail the same way, so a
consumer dead-letters the message instead of retrying it. It names the field at fault.
"""


class ContractError(ValueError):
    """Input that breaks a contract: `field` names where, `reason` says why."""

    retryable = False

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
