"""Request-reply queries over core NATS: every reply is `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"field", "reason", "retryable"}}`, so a caller never waits on a
swallowed error, and knows whether asking again can help (a database outage) or not (bad input)."""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.errors import NoRespondersError

from headwater.contracts.errors import HeadwaterError, InputError, TransientError

if TYPE_CHECKING:  # the CLI reads replies only: it does not load FastStream for a request
    from faststream.nats import NatsBroker

_log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def responder(
    broker: "NatsBroker", subject: str, handler: Handler, *, max_workers: int = 1
) -> None:
    """Serve `handler` on `subject` (a queue group, so replicas share the load), up to
    `max_workers` requests at a time in this process."""
    from faststream.nats import NatsMessage

    from headwater.runtime.messaging import raw_body

    @broker.subscriber(
        subject, queue="rpc", include_in_schema=False, max_workers=max_workers, decoder=raw_body
    )
    async def _serve(msg: NatsMessage) -> bytes:
        try:
            body = json.loads(msg.raw_message.data or b"{}")
            if not isinstance(body, dict):
                raise InputError("payload", "must be a JSON object")
            result = await handler(body)
            return json.dumps({"ok": True, "result": result}, default=str).encode()
        except json.JSONDecodeError as exc:
            return _error("payload", f"is not JSON: {exc.msg}")
        except HeadwaterError as exc:
            if not exc.retryable:  # the caller's input: asking again gives the same answer
                return _error(*exc.reply())
            _log.warning("rpc %s failed: %s", subject, exc)
            return _error("server", f"{type(exc).__name__}: {exc}", retryable=True)
        except Exception as exc:
            # The server's own trouble (e.g. its database is down), not the caller's input.
            _log.exception("rpc %s failed", subject)
            return _error("server", f"{type(exc).__name__}: {exc}", retryable=True)


def _error(field: str, reason: str, *, retryable: bool = False) -> bytes:
    error = {"field": field, "reason": reason, "retryable": retryable}
    return json.dumps({"ok": False, "error": error}).encode()


def raise_error(subject: str, error: dict[str, Any]) -> None:
    """Turn an error reply into the exception it stands for."""
    if error.get("retryable"):
        raise TransientError(f"{subject}: {error.get('reason', 'server error')}")
    raise InputError(error.get("field", "server"), error.get("reason", "unknown error"))


async def call(
    broker: "NatsBroker", subject: str, body: dict[str, Any], timeout: float = 5.0
) -> Any:
    """Ask a service; its error reply becomes InputError, no reply a TransientError."""
    try:
        reply = await broker.request(json.dumps(body).encode(), subject, timeout=timeout)
    except (TimeoutError, NoRespondersError) as exc:
        raise TransientError(f"no reply on {subject} within {timeout}s") from exc
    data = json.loads(reply.body)
    if not data.get("ok"):
        raise_error(subject, data.get("error", {}))
    return data["result"]
