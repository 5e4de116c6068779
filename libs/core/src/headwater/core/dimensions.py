"""Named partition dimensions: a source's `partitions:` declaration, checked, and whether a
key is one of its keys. Keys join `NAME=VALUE` per dimension with ',' in declaration order
(headwater.contracts.keys.join_dimensions): `date=2013-01-01,origin=JFK`.

    sources:
      flights:
        partitions: {date: daily, origin: [EWR, JFK, LGA]}   # a pattern, or a list of values
"""

from collections.abc import Sequence

from headwater.contracts import Dimension, InputError
from headwater.contracts.keys import (
    is_dimension_value,
    validate_dimension_name,
    validate_dimensioned_key,
)
from headwater.core.patterns import PatternError, compile_value_pattern, matches_whole

# The named patterns a dimension may be declared with; any other is `{pattern: REGEX}`.
NAMED_PATTERNS = {
    "daily": r"\d{4}-\d{2}-\d{2}",
    "monthly": r"\d{4}-\d{2}",
    "yearly": r"\d{4}",
    "hourly": r"\d{4}-\d{2}-\d{2}T\d{2}",
    "any": r"[A-Za-z0-9\-_.:]+",
}
MAX_DIMENSIONS = 4
MAX_VALUES = 1000


def parse_dimensions(raw: object) -> tuple[Dimension, ...]:
    """A `partitions:` declaration, checked; InputError names the field (under `partitions`)."""
    if not isinstance(raw, dict) or not raw:
        raise InputError(
            "partitions",
            "must map each dimension's name to a pattern (daily, monthly, yearly, hourly, any, "
            "or {pattern: REGEX}) or a list of its values",
        )
    if len(raw) > MAX_DIMENSIONS:
        raise InputError("partitions", f"declares {len(raw)} dimensions (at most {MAX_DIMENSIONS})")
    out = []
    for name, spec in raw.items():
        name = validate_dimension_name(str(name), "partitions")
        field = f"partitions.{name}"
        if isinstance(spec, str):
            if spec not in NAMED_PATTERNS:
                raise InputError(
                    field,
                    f"{spec!r} is not one of {sorted(NAMED_PATTERNS)} (or {{pattern: REGEX}})",
                )
            out.append(Dimension(name=name, pattern=NAMED_PATTERNS[spec]))
        elif (
            isinstance(spec, dict) and set(spec) == {"pattern"} and isinstance(spec["pattern"], str)
        ):
            try:
                compile_value_pattern(spec["pattern"])
            except PatternError as exc:
                raise InputError(f"{field}.pattern", exc.reason) from exc
            out.append(Dimension(name=name, pattern=spec["pattern"]))
        elif isinstance(spec, list) and spec:
            if len(spec) > MAX_VALUES:
                raise InputError(field, f"lists {len(spec)} values (at most {MAX_VALUES})")
            values = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in spec]
            for v in values:
                if not isinstance(v, str) or not is_dimension_value(v):
                    raise InputError(
                        field,
                        f"value {v!r} is not ASCII letters, digits and '-_.:' (1-64, no '..')",
                    )
            if len(set(values)) != len(values):
                raise InputError(field, "lists a value twice")
            out.append(Dimension(name=name, values=tuple(values)))
        else:
            raise InputError(
                field, "must be a pattern name, {pattern: REGEX} or a non-empty list of values"
            )
    return tuple(out)


def dimensions_text(dims: Sequence[Dimension]) -> str:
    """A stable text of the dimensions, for a source's code SHA."""
    parts = []
    for d in dims:
        what = (
            f"pattern={d.pattern}"
            if d.pattern is not None
            else f"values={','.join(d.values or ())}"
        )
        parts.append(f"{d.name}:{what}")
    return "partitions|" + ";".join(parts)


def check_key(dims: Sequence[Dimension], key: str, field: str = "partition") -> tuple[str, ...]:
    """The values of `key` if it is a key of these dimensions (each value its dimension's),
    else InputError naming `field` and what is wrong."""
    values = validate_dimensioned_key(key, [d.name for d in dims], field)
    for d, value in zip(dims, values, strict=True):
        if d.values is not None and value not in d.values:
            shown = ", ".join(d.values[:10]) + (", ..." if len(d.values) > 10 else "")
            raise InputError(field, f"{d.name}={value!r} is not one of its values ({shown})")
        if d.pattern is not None and not matches_whole(d.pattern, value):
            raise InputError(field, f"{d.name}={value!r} does not match its pattern {d.pattern!r}")
    return values


def show(key: str, names: Sequence[str] | None) -> dict[str, str] | None:
    """The dimension values of `key` by name (for JSON), or None for a plain key."""
    from headwater.contracts.keys import split_dimensions

    if not names:
        return None
    values = split_dimensions(key, list(names))
    return None if values is None else dict(zip(names, values, strict=True))
