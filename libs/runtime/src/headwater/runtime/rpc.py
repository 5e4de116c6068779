"""Request-reply queries over core NATS: every reply is `{"ok": true, "result": ...}` or
`{"ok": false, "error": {"field", "reason", "retryable"}}`, so a caller never waits on a
swallowed error, and knows whether asking again can help (a database outage) or not (bad input).
Requests and results are the models of headwater.contracts.rpc, parsed on both sides."""

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from nats.errors import NoRespondersError
from pydantic import BaseModel, ValidationError

from headwater.contracts import Subjects, parse_model
from headwater.contracts.base import input_error
from headwater.contracts.errors import HeadwaterError, InputError, TransientError
from headwater.contracts.rpc import Rpc

if TYPE_CHECKING:  # the CLI reads replies only: it does not load FastStream for a request
    from faststream.nats import NatsBroker

_log = logging.getLogger(__name__)
Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
# A request is bounded by the NATS server's max payload; a spec with its files is the largest.
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def responder(
    broker: "NatsBroker",
    subjects: Subjects,
    rpc: Rpc[Q, R],
    handler: Callable[[Q], Awaitable[R]],
    *,
    max_workers: int = 1,
) -> None:
    """Serve `rpc` with `handler` (a queue group, so replicas share the load), up to
    `max_workers` requests at a time in this process. A request that is not its model gets an
    error reply naming the field and the reason."""
    from faststream.nats import NatsMessage

    from headwater.runtime.messaging import raw_body

    subject = rpc.subject(subjects)

    @broker.subscriber(
        subject, queue="rpc", include_in_schema=False, max_workers=max_workers, decoder=raw_body
    )
    async def _serve(msg: NatsMessage) -> bytes:
        try:
            result = await answer(rpc, handler, msg.raw_message.data or b"{}")
            return b'{"ok": true, "result": ' + result + b"}"
        except HeadwaterError as exc:
            if not exc.retryable:  # the caller's input: asking again gives the same answer
                return _error(*exc.reply())
            _log.warning("rpc %s failed: %s", subject, exc)
            return _error("server", f"{type(exc).__name__}: {exc}", retryable=True)
        except Exception as exc:
            # The server's own trouble (e.g. its database is down), not the caller's input.
            _log.exception("rpc %s failed", subject)
            return _error("server", f"{type(exc).__name__}: {exc}", retryable=True)


async def answer(rpc: Rpc[Q, R], handler: Callable[[Q], Awaitable[R]], raw: bytes) -> bytes:
    """`handler`'s reply to the request `raw`, as the JSON its caller receives; a request
    that is not `rpc`'s request model raises an InputError naming the field."""
    request = parse_model(rpc.request, raw, max_bytes=MAX_REQUEST_BYTES, what="request")
    reply = await handler(request)
    # `str` for what JSON has no type for (timestamps), as these replies always had.
    return json.dumps(reply.model_dump(), default=str).encode()


def _error(field: str, reason: str, *, retryable: bool = False) -> bytes:
    error = {"field": field, "reason": reason, "retryable": retryable}
    return json.dumps({"ok": False, "error": error}).encode()


def raise_error(subject: str, error: dict[str, Any]) -> None:
    """Turn an error reply into the exception it stands for."""
    if error.get("retryable"):
        raise TransientError(f"{subject}: {error.get('reason', 'server error')}")
    raise InputError(error.get("field", "server"), error.get("reason", "unknown error"))


@contextmanager
def checked() -> Iterator[None]:
    """Build requests inside: a value its model refuses is an InputError naming the field
    (as the responder would answer), not a ValidationError."""
    try:
        yield
    except ValidationError as exc:
        raise input_error(exc, "request") from exc


def encode(request: BaseModel) -> bytes:
    """A request as it travels."""
    return request.model_dump_json().encode()


def result_of(subject: str, raw: bytes) -> Any:
    """The result of a reply, as JSON; an error reply raises the exception it stands for."""
    data = json.loads(raw)
    if not data.get("ok"):
        raise_error(subject, data.get("error", {}))
    return data["result"]


def decode(rpc: Rpc[Any, R], subject: str, raw: bytes) -> R:
    """A reply parsed into `rpc`'s reply model. One that is not (a service of another
    version) is a HeadwaterError naming the field, not retried: asking again gives the same."""
    result = result_of(subject, raw)
    try:
        return rpc.reply.model_validate(result)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        raise HeadwaterError(
            f"{subject}: the reply does not match {rpc.reply.__name__} ({where}: {first['msg']})"
        ) from exc


async def call(
    broker: "NatsBroker", subjects: Subjects, rpc: Rpc[Q, R], request: Q, timeout: float = 5.0
) -> R:
    """Ask a service; its error reply becomes InputError, no reply a TransientError."""
    subject = rpc.subject(subjects)
    try:
        reply = await broker.request(encode(request), subject, timeout=timeout)
    except (TimeoutError, NoRespondersError) as exc:
        raise TransientError(f"no reply on {subject} within {timeout}s") from exc
    return decode(rpc, subject, reply.body)
