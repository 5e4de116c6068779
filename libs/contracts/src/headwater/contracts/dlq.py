"""Dead letters: input a service could not accept, kept with the reason for inspection."""

from typing import Literal

from headwater.contracts.base import Event


class DeadLetter(Event):
    """A rejected message: where it came from, which field was wrong and why."""

    schema_version: Literal[1] = 1
    service: str
    subject: str
    field: str
    reason: str
    payload_b64: str  # the first 64 KiB of the rejected payload
    payload_bytes: int = 0  # its whole size
    payload_sha256: str = ""
    truncated: bool = False
    headers: dict[str, str] = {}
    delivered: int = 1
