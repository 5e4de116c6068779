"""Partition mappings: which input partitions an output partition reads, and back.

identity: the same key. all: every input partition feeds the one output partition
(UNPARTITIONED_KEY). window N: the N input keys ending at this key (in sorted order).
rollup: every input key that maps to this output key (day -> month/year, or a regex capture,
run by RE2: see headwater.core.patterns).
"""

import functools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, KeysView, Sequence, Set
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from headwater.contracts import InputDefinition
from headwater.contracts.keys import PARTITION_KEY_PATTERN
from headwater.core.patterns import PatternError, compile_pattern, first_group

UNPARTITIONED_KEY = "all"
# A rollup to a calendar period travels in a dataset definition as its regex (the contract
# carries a mapping's name, size and pattern only); read back (`Mapping.of`), it is the period
# again, whose input partitions an index finds by prefix rather than by a scan of every key.
PERIOD_PATTERNS = {"month": r"^(\d{4}-\d{2})-\d{2}", "year": r"^(\d{4})-\d{2}-\d{2}"}
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_KEY = re.compile(PARTITION_KEY_PATTERN)


@dataclass
class Scope:
    """Which partitions of one dataset a decision needs, as queries an index answers: exact
    keys, the `n` keys at or before / at or after a key (sorted by code point), keys with a
    prefix, or (only for `all` and pattern rollups) every key. Loading just these keeps the
    cost of one event independent of how many partitions are held."""

    exact: set[str] = field(default_factory=set)
    before: set[tuple[str, int]] = field(default_factory=set)
    after: set[tuple[str, int]] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    everything: bool = False

    def __ior__(self, other: "Scope") -> "Scope":
        self.exact |= other.exact
        self.before |= other.before
        self.after |= other.after
        self.prefixes |= other.prefixes
        self.everything = self.everything or other.everything
        return self

    def asks(self) -> int:
        """How many index look-ups answering this scope takes."""
        return len(self.exact) + len(self.before) + len(self.after) + len(self.prefixes)

    def select(self, keys: Iterable[str]) -> set[str]:
        """The keys of `keys` this scope asks for (what a store's queries return)."""
        ordered = sorted(keys)
        if self.everything:
            return set(ordered)
        out = {k for k in ordered if k in self.exact or k.startswith(tuple(self.prefixes))}
        for key, n in self.before:
            out.update([k for k in ordered if k <= key][-n:])
        for key, n in self.after:
            out.update([k for k in ordered if k >= key][:n])
        return out


class Mapping(BaseModel):
    """How one input's partitions map to the output's partitions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Its name, as the spec writes it (`{mapping: window, size: 7}`) and InputDefinition
    # carries it.
    mapping: Literal["identity", "all", "window", "rollup"] = "identity"
    size: int | None = None
    to: Literal["month", "year"] | None = None
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _runs_on_re2(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                compile_pattern(pattern)
            except PatternError as exc:
                raise ValueError(str(exc)) from exc
        return pattern

    @model_validator(mode="after")
    def _check(self) -> "Mapping":
        if self.size is not None and self.mapping != "window":
            raise ValueError(f"size applies to window, not {self.mapping}")
        if (self.to is not None or self.pattern is not None) and self.mapping != "rollup":
            raise ValueError(f"to/pattern apply to rollup, not {self.mapping}")
        if self.mapping == "window" and (self.size is None or self.size < 1):
            raise ValueError("window needs size >= 1")
        if self.mapping == "rollup" and (self.to is None) == (self.pattern is None):
            raise ValueError("rollup needs exactly one of to: month|year or pattern: REGEX")
        return self

    @classmethod
    def of(cls, d: InputDefinition) -> "Mapping":
        """The mapping an input definition carries (the inverse of `definition`)."""
        return _mapping_of(d.mapping, d.size, d.pattern)

    def definition(self, dataset: str) -> InputDefinition:
        """What the scheduler is told of input `dataset` read through this mapping."""
        pattern = PERIOD_PATTERNS[self.to] if self.to is not None else self.pattern
        return InputDefinition(
            dataset=dataset, mapping=self.mapping, size=self.size, pattern=pattern
        )

    def canonical(self) -> str:
        """A stable text of the mapping and its parameters, for the code SHA."""
        return f"{self.mapping}|size={self.size}|to={self.to}|pattern={self.pattern}"

    @property
    def partitions_output(self) -> bool:
        """Whether this input decides which output partitions exist."""
        return self.mapping != "all"

    def output_key(self, input_key: str) -> str | None:
        """The output partition an input partition rolls into (rollup), or None if none."""
        if self.mapping in ("identity", "window"):
            return input_key
        if self.mapping == "all":
            return UNPARTITIONED_KEY
        if self.pattern is not None:
            key = first_group(self.pattern, input_key)
            # An output key must be a valid partition key like any other (never "" or "..").
            return key if key and _KEY.fullmatch(key) and ".." not in key else None
        day = _DAY.match(input_key)
        if not day:
            return None
        return f"{day[1]}-{day[2]}" if self.to == "month" else day[1]

    def output_keys(self, input_keys: Iterable[str]) -> set[str]:
        """The output partitions that some of `input_keys` feed."""
        keys = {self.output_key(k) for k in input_keys}
        keys.discard(None)
        return keys  # type: ignore[return-value]

    def inputs_for(
        self, output_key: str, input_keys: Iterable[str], ordered: Sequence[str] | None = None
    ) -> list[str]:
        """The input partitions output partition `output_key` reads, sorted. `ordered`, the
        same keys already sorted, lets a caller deciding many keys sort them once (each
        answer is then a bisection, not a scan)."""
        if self.mapping == "identity":
            present = input_keys if isinstance(input_keys, Set | KeysView) else set(input_keys)
            return [output_key] if output_key in present else []
        existing = ordered if ordered is not None else sorted(input_keys)
        if self.mapping == "all":
            return list(existing)
        if self.mapping == "window":
            assert self.size is not None
            end = bisect_right(existing, output_key)
            if end == 0 or existing[end - 1] != output_key:
                return []
            return list(existing[max(0, end - self.size) : end])
        if self.to is not None:  # a day's month or year is a prefix of the day: a range
            prefix = f"{output_key}-"
            lo = bisect_left(existing, prefix)
            hi = bisect_left(existing, prefix + "\x7f")
            return [k for k in existing[lo:hi] if self.output_key(k) == output_key]
        return [k for k in existing if self.output_key(k) == output_key]

    def input_scope(self, output_key: str) -> Scope:
        """The input partitions `inputs_for(output_key, ...)` can need: given every input key
        in this scope (and any others), it answers as it would given them all."""
        if self.mapping == "identity":
            return Scope(exact={output_key})
        if self.mapping == "window":
            assert self.size is not None
            return Scope(before={(output_key, self.size)})
        if self.mapping == "rollup" and self.to is not None:
            # A month '2024-05' gathers the days '2024-05-…'; a year '2024' the days '2024-…'.
            return Scope(prefixes={f"{output_key}-"})
        return Scope(everything=True)  # all, and a pattern rollup (no index by its groups)

    def affected_scope(self, input_key: str) -> Scope:
        """The input partitions `affected_outputs(input_key, ...)` needs besides the key."""
        if self.mapping == "window":
            assert self.size is not None
            return Scope(after={(input_key, self.size)})
        return Scope()

    def affected_outputs(
        self, input_key: str, input_keys: Iterable[str], ordered: Sequence[str] | None = None
    ) -> set[str]:
        """The output partitions whose inputs include `input_key`. `ordered`, the same keys
        sorted, makes asking for many input keys a bisection each."""
        if self.mapping != "window":
            out = self.output_key(input_key)
            return {out} if out is not None else set()
        assert self.size is not None
        # `input_key` counts even when it is gone (retracted): the windows it was in change.
        existing = ordered if ordered is not None else sorted(input_keys)
        start = bisect_left(existing, input_key)
        later = [k for k in existing[start : start + self.size + 1] if k != input_key]
        return {input_key, *later[: self.size - 1]}


@functools.lru_cache(maxsize=1024)
def _mapping_of(mapping: str, size: int | None, pattern: str | None) -> Mapping:
    """`Mapping.of`, validated (a pattern compiled) once per distinct mapping, not once per
    partition decided. A Mapping is frozen, so one instance serves every caller."""
    if mapping == "rollup":
        for period, period_pattern in PERIOD_PATTERNS.items():
            if pattern == period_pattern:
                return Mapping(mapping="rollup", to=period)
    return Mapping(mapping=mapping, size=size, pattern=pattern)
