"""Rollup patterns (`{mapping: rollup, pattern: REGEX}`): compiled and run by RE2, whose matching
time is linear in the key whatever the pattern, so a crafted key cannot stall the scheduler.

A pattern RE2 cannot run (backreferences, lookarounds) is refused when the spec is applied.
"""

from functools import lru_cache
from typing import Any, Final

import re2  # type: ignore[import-untyped]

from headwater.contracts.errors import InputError

MAX_PATTERN_CHARS: Final = 256
# Longest partition key (headwater.contracts.keys): a longer string is never a key.
MAX_KEY_CHARS: Final = 128


class PatternError(InputError):
    """A rollup pattern that cannot be used; the message is the reason. Permanent."""

    def __init__(self, message: str) -> None:
        super().__init__("pattern", message, message=message)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason goes to the caller, not to stderr
    options.max_mem = 1 << 20  # bounds the compiled program: `(a{100}){100}` is refused
    return options


_OPTIONS: Final = _options()


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern, or PatternError saying why it cannot be used."""
    compiled = compile_value_pattern(pattern)
    if compiled.groups < 1:
        raise PatternError("pattern needs one capture group (the output key)")
    return compiled


@lru_cache(maxsize=1024)
def compile_value_pattern(pattern: str) -> Any:
    """A pattern values must match (a dimension's), compiled by RE2; no capture group needed."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(
            f"pattern is {len(pattern)} characters long (at most {MAX_PATTERN_CHARS})"
        )
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise PatternError(
            "pattern does not compile as RE2, the linear-time engine patterns run on "
            f"(no backreferences or lookarounds): {detail}"
        ) from exc
    return compiled


def matches_whole(pattern: str, value: str) -> bool:
    """Whether `value` matches `pattern` whole (a pattern that cannot run matches nothing)."""
    if len(value) > MAX_KEY_CHARS:
        return False
    try:
        compiled = compile_value_pattern(pattern)
    except PatternError:
        return False
    return compiled.fullmatch(value) is not None


def first_group(pattern: str, key: str) -> str | None:
    """The first capture group of `pattern` searched in `key`, or None (no match, a key
    longer than any partition key, or a pattern RE2 cannot run)."""
    if len(key) > MAX_KEY_CHARS:
        return None
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return None  # a definition is validated before it gets here; never raise mid-reconcile
    match = compiled.search(key)
    if match is None:
        return None
    group = match.group(1)
    return group if isinstance(group, str) else None
