"""Base models for events and the one parser that turns bytes into an event or a InputError."""

import json
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from headwater.contracts.errors import InputError

MAX_EVENT_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32  # events are flat; S3 records nest about 6 deep
MAX_INT_DIGITS = 40  # beyond any count, size or version an event carries


class Event(BaseModel):
    """An event between Headwater services: frozen, versioned, closed to unknown fields.

    `RETIRED` names the fields a model no longer has, with the type they had: an event written
    before one was removed (stored, in flight, or a dead letter replayed) still parses, the
    field dropped unread, while any other unknown field is refused as before. A retired field
    of another type is bad input like any other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    RETIRED: ClassVar[dict[str, type]] = {}

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        if not cls.RETIRED or not isinstance(data, dict):
            return data
        for name, kind in cls.RETIRED.items():
            if name in data and not isinstance(data[name], kind):
                raise InputError(name, f"is retired (ignored), but must be a {kind.__name__}")
        return {k: v for k, v in data.items() if k not in cls.RETIRED}


class UntrustedEvent(Event):
    """An event from outside Headwater: strict types as well (no "1" for 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


M = TypeVar("M", bound=BaseModel)


def parse_model(
    model: type[M], raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES, what: str = "event"
) -> M:
    """Decode `raw` as a JSON object of `model`; any failure is a InputError naming the field.
    `what` the payload is (an event, a request) words the reason for an unknown field."""
    if len(raw) > max_bytes:
        raise InputError("payload", f"is {len(raw)} bytes (at most {max_bytes})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("payload", f"is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        data: Any = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InputError("payload", f"is not JSON ({exc.msg} at char {exc.pos})") from exc
    except RecursionError:
        raise InputError("payload", f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise InputError("payload", f"nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise InputError("payload", f"is a JSON {type(data).__name__}, not an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise input_error(exc, what) from exc


def input_error(exc: ValidationError, what: str = "event") -> InputError:
    """The InputError a failed validation stands for: its first error's field and reason."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "payload"
    message = str(first["msg"])
    # Validators raise InputError inside pydantic; keep its reason, not the wrapper text.
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InputError):
        message = cause.reason
        if not first["loc"]:  # a model-level validator names its own field
            field = cause.field or field
    elif first["type"] == "extra_forbidden":
        message = f"is not a field of this {what}"
    elif first["type"] == "missing":
        message = "is required"
    return InputError(field, message)


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError(
            "payload", f"has an integer of {len(digits)} digits (at most {MAX_INT_DIGITS})"
        )
    return int(digits)


def _depth(value: Any) -> int:
    """How deeply `value` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if level + 1 > MAX_JSON_DEPTH:
                    return level + 1
                stack.append((child, level + 1))
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
    return deepest
