"""Partition mappings: which input partitions an output partition reads, and back.

identity: the same key. all: every input partition feeds the one output partition
(UNPARTITIONED_KEY). window N: the N input keys ending at this key (in sorted order).
rollup: every input key that maps to this output key (day -> month/year, or a regex capture,
run by RE2: see headwater.core.patterns).

A dataset with named dimensions (keys `date=2013-01-01,origin=JFK`) is read through a
`DimensionalMapping`: one of those mappings per dimension, applied to that dimension's values.
"""

import functools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, KeysView, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from headwater.contracts import DimensionMapping, InputDefinition
from headwater.contracts.keys import (
    DIMENSION_SEPARATOR,
    PARTITION_KEY_PATTERN,
    is_dimension_value,
    join_dimensions,
    split_dimensions,
)
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
    grids: set["Grid"] = field(default_factory=set)
    everything: bool = False

    def __ior__(self, other: "Scope") -> "Scope":
        self.exact |= other.exact
        self.before |= other.before
        self.after |= other.after
        self.prefixes |= other.prefixes
        self.grids |= other.grids
        self.everything = self.everything or other.everything
        return self

    def asks(self) -> int:
        """How many index look-ups answering this scope takes."""
        asks = len(self.exact) + len(self.before) + len(self.after) + len(self.prefixes)
        return asks + len(self.grids)

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
        for grid in self.grids:
            out.update(grid.select(ordered))
        return out


@dataclass(frozen=True)
class Grid:
    """Keys of a dataset with dimensions that match a constraint per dimension: those under
    `prefix` (the leading constrained dimensions: one range of the key index) whose whole key
    matches `like` (SQL LIKE, `\\` escapes) and `regex` (the same, for Python). With `bound`
    and `n`: only the `n` matches at or `before` (or at or after) `bound`, nearest first; the
    other dimensions are then fixed, so the matches are the n nearest values of the one left
    free (a window along one dimension)."""

    prefix: str
    like: str
    regex: str
    bound: str | None = None
    n: int = 0
    direction: Literal["before", "after"] = "before"

    def select(self, ordered: Sequence[str]) -> list[str]:
        """The keys of `ordered` (sorted) this grid asks for."""
        lo = bisect_left(ordered, self.prefix)
        hi = bisect_left(ordered, self.prefix + "\x7f")
        found = re.compile(self.regex)
        keys = [k for k in ordered[lo:hi] if found.fullmatch(k)]
        if self.bound is None:
            return keys
        if self.direction == "before":
            return [k for k in keys if k <= self.bound][-self.n :]
        return [k for k in keys if k >= self.bound][: self.n]


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
    def of(cls, d: InputDefinition) -> "PartitionMapping":
        """The mapping an input definition carries (the inverse of `definition`): one per
        dimension (`DimensionalMapping`) when the input has dimensions."""
        if d.dimensions is not None:
            return _dimensional_of(d.dimensions)
        return _mapping_of(d.mapping, d.size, d.pattern)

    def definition(self, dataset: str) -> InputDefinition:
        """What the scheduler is told of input `dataset` read through this mapping."""
        pattern = PERIOD_PATTERNS[self.to] if self.to is not None else self.pattern
        return InputDefinition(
            dataset=dataset, mapping=self.mapping, size=self.size, pattern=pattern
        )

    def label(self) -> str:
        """How it is shown: `identity`, `all`, `window 7`, `rollup month`, `rollup REGEX`."""
        if self.mapping == "window":
            return f"window {self.size}"
        if self.mapping == "rollup":
            return f"rollup {self.to or self.pattern}"
        return self.mapping

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


_ANY = None  # a dimension any value of which matches


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DimensionalMapping(BaseModel):
    """How the partitions of an input with named dimensions map to the output's: a `Mapping`
    per dimension (every one of the input's, in its order), applied to that dimension's
    values. The output's dimensions are the input's less those read whole (`all`); a
    window runs along one dimension, the others identity (spec validation), so its n keys
    are one bounded index look-up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mapping: Literal["dimensions"] = "dimensions"
    dims: tuple[tuple[str, Mapping], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dims)

    @property
    def output_dimensions(self) -> tuple[str, ...]:
        """The output's dimensions: the input's that are not read whole."""
        return tuple(name for name, m in self.dims if m.mapping != "all")

    @property
    def partitions_output(self) -> bool:
        return bool(self.output_dimensions)

    @property
    def window(self) -> int | None:
        """The position of the dimension a window runs along, if any."""
        return next((i for i, (_, m) in enumerate(self.dims) if m.mapping == "window"), None)

    def definition(self, dataset: str) -> InputDefinition:
        dims = []
        for name, m in self.dims:
            plain = m.definition(dataset)
            dims.append(
                DimensionMapping(
                    dimension=name, mapping=plain.mapping, size=plain.size, pattern=plain.pattern
                )
            )
        return InputDefinition(dataset=dataset, mapping=self.mapping, dimensions=tuple(dims))

    def canonical(self) -> str:
        """Every dimension, in the input's order, with its mapping (for the code SHA)."""
        return "dimensions|" + ";".join(f"{n}:{m.canonical()}" for n, m in self.dims)

    def label(self) -> str:
        """`date: window 7, origin: identity`."""
        return ", ".join(f"{n}: {m.label()}" for n, m in self.dims)

    def _outputs(self, values: Sequence[str]) -> tuple[str | None, ...] | None:
        """Each dimension's output value (None for one read whole), or None if some value
        maps to no output."""
        out: list[str | None] = []
        for value, (_, m) in zip(values, self.dims, strict=True):
            if m.mapping == "all":
                out.append(None)
                continue
            mapped = m.output_key(value)
            if mapped is None or not is_dimension_value(mapped):
                return None
            out.append(mapped)
        return tuple(out)

    def _key(self, outputs: Sequence[str | None]) -> str:
        pairs = [(n, v) for (n, _), v in zip(self.dims, outputs, strict=True) if v is not None]
        return join_dimensions(pairs) if pairs else UNPARTITIONED_KEY

    def output_key(self, input_key: str) -> str | None:
        """The output partition an input partition maps to (its window end, for a window)."""
        values = split_dimensions(input_key, self.names)
        if values is None:
            return None
        outputs = self._outputs(values)
        return None if outputs is None else self._key(outputs)

    def output_keys(self, input_keys: Iterable[str]) -> set[str]:
        keys = {self.output_key(k) for k in input_keys}
        keys.discard(None)
        return keys  # type: ignore[return-value]

    def _output_values(self, output_key: str) -> list[str | None] | None:
        """The output's value of each input dimension (None: read whole), or None."""
        names = self.output_dimensions
        values = split_dimensions(output_key, names) if names else ()
        if values is None or (not names and output_key != UNPARTITIONED_KEY):
            return None
        given = dict(zip(names, values, strict=True))
        return [given.get(n) for n in self.names]

    def _grid(
        self, wanted: Sequence[str | None], free: int | None = None, bound: str | None = None
    ) -> Grid:
        """The keys whose dimensions match `wanted` (the output's values, None: any): exact
        for identity and window, a prefix for a month or year rollup, any for `all` and
        pattern rollups; the dimension at `free` any value, nearest `bound` first."""
        prefix, like, regex, open_ = "", [], [], False
        for i, ((name, m), value) in enumerate(zip(self.dims, wanted, strict=True)):
            head = f"{name}="
            if i == free or value is None or (m.mapping == "rollup" and m.to is None):
                exact, starts = None, ""
            elif m.mapping == "rollup":
                exact, starts = None, f"{value}-"
            else:
                exact, starts = value, ""
            if exact is not None:
                like.append(_like(head + exact))
                regex.append(re.escape(head + exact))
            else:
                like.append(_like(head + starts) + "%")
                regex.append(re.escape(head + starts) + "[^,]*")
            if not open_:
                prefix += (DIMENSION_SEPARATOR if i else "") + head + (exact or starts)
                open_ = exact is None
        sep = _like(DIMENSION_SEPARATOR)
        grid = Grid(
            prefix=prefix, like=sep.join(like), regex=re.escape(DIMENSION_SEPARATOR).join(regex)
        )
        if free is None:
            return grid
        m = self.dims[free][1]
        assert m.size is not None
        return replace(grid, bound=bound, n=m.size, direction="before")

    def input_scope(self, output_key: str) -> Scope:
        wanted = self._output_values(output_key)
        if wanted is None:
            return Scope()
        return Scope(grids={self._grid(wanted, self.window, output_key)})

    def affected_scope(self, input_key: str) -> Scope:
        free = self.window
        values = split_dimensions(input_key, self.names)
        if free is None or values is None:
            return Scope()
        m = self.dims[free][1]
        assert m.size is not None
        grid = self._grid(values, free, input_key)
        return Scope(grids={replace(grid, direction="after")})

    def _candidates(
        self, grid: Grid, input_keys: Iterable[str], ordered: Sequence[str] | None
    ) -> list[str]:
        existing = ordered if ordered is not None else sorted(input_keys)
        return grid.select(existing)

    def inputs_for(
        self, output_key: str, input_keys: Iterable[str], ordered: Sequence[str] | None = None
    ) -> list[str]:
        """The input partitions output partition `output_key` reads, sorted."""
        wanted = self._output_values(output_key)
        if wanted is None:
            return []
        free = self.window
        grid = replace(self._grid(wanted, free), bound=None)
        keys = [k for k in self._candidates(grid, input_keys, ordered) if self._reads(k, wanted)]
        if free is None:
            return keys
        # A window: the n keys ending at the output's, along its dimension (the others fixed).
        size = self.dims[free][1].size
        assert size is not None
        upto = [k for k in keys if k <= output_key]
        if not upto or upto[-1] != output_key:
            return []
        return upto[-size:]

    def _reads(self, key: str, wanted: Sequence[str | None]) -> bool:
        values = split_dimensions(key, self.names)
        if values is None:
            return False
        outputs = self._outputs(values)
        if outputs is None:
            return False
        free = self.window
        return all(
            w is None or i == free or o == w
            for i, (o, w) in enumerate(zip(outputs, wanted, strict=True))
        )

    def affected_outputs(
        self, input_key: str, input_keys: Iterable[str], ordered: Sequence[str] | None = None
    ) -> set[str]:
        """The output partitions whose inputs include `input_key` (gone or not)."""
        out = self.output_key(input_key)
        if out is None:
            return set()
        free = self.window
        values = split_dimensions(input_key, self.names)
        if free is None or values is None:
            return {out}
        size = self.dims[free][1].size
        assert size is not None
        grid = replace(self._grid(values, free), bound=None)
        later = [k for k in self._candidates(grid, input_keys, ordered) if k > input_key]
        return {out, *(self.output_key(k) or out for k in later[: size - 1])}


PartitionMapping = Mapping | DimensionalMapping


@functools.lru_cache(maxsize=1024)
def _dimensional_of(dims: tuple[DimensionMapping, ...]) -> DimensionalMapping:
    return DimensionalMapping(
        dims=tuple((d.dimension, _mapping_of(d.mapping, d.size, d.pattern)) for d in dims)
    )


@functools.lru_cache(maxsize=1024)
def _mapping_of(mapping: str, size: int | None, pattern: str | None) -> Mapping:
    """`Mapping.of`, validated (a pattern compiled) once per distinct mapping, not once per
    partition decided. A Mapping is frozen, so one instance serves every caller."""
    if mapping == "rollup":
        for period, period_pattern in PERIOD_PATTERNS.items():
            if pattern == period_pattern:
                return Mapping(mapping="rollup", to=period)
    return Mapping(mapping=mapping, size=size, pattern=pattern)
