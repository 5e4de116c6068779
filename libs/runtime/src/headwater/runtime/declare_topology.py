"""The one-shot topology step: `python -m headwater.runtime.declare_topology` declares every
JetStream stream, durable consumer and key-value bucket as an admin NATS user, then exits, so
the services can run as users without JetStream admin rights (HEADWATER_DECLARE_TOPOLOGY=false).

It reads the services' settings (`HEADWATER_NATS_URL`, `_NATS_USER`, `_NATS_PASSWORD`,
`_NAMESPACE`, and the consumers' `_TASK_ACK_WAIT_S` and `_EVENT_ACK_WAIT_S`). Idempotent: run
it on every deployment; it creates what is missing and updates what changed.
"""

import asyncio
import logging
import sys

import nats
from nats.errors import NoServersError
from pydantic import ValidationError

from headwater.runtime import topology
from headwater.runtime.settings import ServiceSettings, describe_invalid

_log = logging.getLogger("headwater.topology")
CONNECT_ATTEMPTS = 30


async def declare(settings: ServiceSettings) -> None:
    """Connect (retrying while NATS comes up), declare the topology, disconnect."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            nc = await nats.connect(
                settings.nats_url,
                user=settings.nats_user,
                password=settings.nats_password,
                allow_reconnect=False,
                connect_timeout=2,
            )
            break
        except (NoServersError, OSError) as exc:
            if attempt == CONNECT_ATTEMPTS:
                raise
            _log.warning("NATS at %s does not answer yet (%s); retrying", settings.nats_url, exc)
            await asyncio.sleep(1.0)
    try:
        await topology.declare(
            nc.jetstream(),
            settings.subjects,
            settings.task_ack_wait_s,
            settings.event_ack_wait_s,
        )
    finally:
        await nc.close()
    _log.info("JetStream topology of namespace %r declared", settings.namespace)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s topology %(message)s"
    )
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        # The placeholder check names the variable; a traceback would only hide it.
        raise SystemExit(f"topology: invalid settings: {describe_invalid(exc)}") from None
    asyncio.run(declare(settings))


if __name__ == "__main__":
    main()
