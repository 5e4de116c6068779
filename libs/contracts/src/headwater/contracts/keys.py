"""Validation of the names that become subjects and object keys (DESIGN.md §4)."""

import re

from headwater.contracts.errors import InputError

DATASET_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# ASCII letters, digits and -_.=:,+ ; 1-128 characters; never "..".
PARTITION_KEY_PATTERN = r"^[A-Za-z0-9\-_.=:,+]{1,128}$"

# An environment's name (`apply --env NAME`): lower-case, it is written into SQL and shown.
ENV_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

_DATASET_RE = re.compile(DATASET_NAME_PATTERN)
_ENV_RE = re.compile(ENV_NAME_PATTERN)
_PARTITION_RE = re.compile(PARTITION_KEY_PATTERN)
_HEAD = 40  # characters of an over-long key shown in an error


def validate_dataset_name(value: str, field: str = "dataset") -> str:
    """Return `value` if it may travel in a subject, else raise InputError."""
    if not _DATASET_RE.fullmatch(value):
        raise InputError(
            field, f"{value!r} is not a dataset name (letters, digits, '_' and '-', 1-64)"
        )
    return value


def validate_env_name(value: str, field: str = "env") -> str:
    """Return `value` if it names an environment, else raise InputError."""
    if not isinstance(value, str) or not _ENV_RE.fullmatch(value):
        raise InputError(
            field,
            f"{value!r} is not an environment name (a lower-case letter, then lower-case"
            " letters, digits, '_' and '-'; 1-32)",
        )
    return value


def validate_partition_key(value: str, field: str = "partition") -> str:
    """Return `value` if it may become part of an object key, else raise InputError."""
    shown = show_key(value)
    if ".." in value:
        raise InputError(field, f"{shown} contains '..'")
    if not _PARTITION_RE.fullmatch(value):
        bad = next((c for c in value if not _PARTITION_RE.fullmatch(c)), None)
        if not value:
            reason = "is empty"
        elif len(value) > 128:
            reason = f"is {len(value)} characters long (at most 128)"
        else:
            reason = f"contains {bad!r}, outside ASCII letters, digits and '-_.=:,+'"
        raise InputError(field, f"{shown} {reason}")
    return value


def show_key(value: str) -> str:
    """A key for an error message: whole when it is short enough to be one, else its head
    and how much more there is (an over-long key is never repeated whole)."""
    if len(value) <= 128:
        return repr(value)
    return f"{value[:_HEAD]!r}... ({len(value) - _HEAD} more characters)"


# A key of a dataset with named dimensions is `NAME=VALUE` per dimension, in the order the
# dataset declares them, joined by ',' (`date=2013-01-01,origin=JFK`): within the key
# alphabet, and readable in an object key (`flights/date=2013-01-01,origin=JFK/f.csv`). A
# value is ASCII letters, digits and `-_.:` (never '=', ',' or '+'): every character of a
# value sorts after ',', so keys sort as the tuples of their values do, and the keys sharing
# their leading dimensions are one range of the key index.
DIMENSION_SEPARATOR = ","
DIMENSION_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
DIMENSION_VALUE_PATTERN = r"^[A-Za-z0-9\-_.:]{1,64}$"
_DIMENSION_NAME_RE = re.compile(DIMENSION_NAME_PATTERN)
_DIMENSION_VALUE_RE = re.compile(DIMENSION_VALUE_PATTERN)


def validate_dimension_name(value: str, field: str = "dimension") -> str:
    """Return `value` if it may name a dimension, else raise InputError."""
    if not _DIMENSION_NAME_RE.fullmatch(value):
        raise InputError(
            field,
            f"{value!r} is not a dimension name (a letter, then letters, digits and '_', 1-32)",
        )
    return value


def is_dimension_value(value: str) -> bool:
    """Whether `value` may be the value of a dimension."""
    return bool(_DIMENSION_VALUE_RE.fullmatch(value)) and ".." not in value


def join_dimensions(values: "list[tuple[str, str]] | tuple[tuple[str, str], ...]") -> str:
    """The partition key of (dimension name, value) pairs, in the dataset's order."""
    return DIMENSION_SEPARATOR.join(f"{name}={value}" for name, value in values)


def split_dimensions(key: str, names: "list[str] | tuple[str, ...]") -> tuple[str, ...] | None:
    """The values of `key` for dimensions `names` (in order), or None if it is not such a key."""
    parts = key.split(DIMENSION_SEPARATOR)
    if len(parts) != len(names):
        return None
    values = []
    for part, name in zip(parts, names, strict=True):
        head, eq, value = part.partition("=")
        if not eq or head != name or not is_dimension_value(value):
            return None
        values.append(value)
    return tuple(values)


def validate_dimensioned_key(
    key: str, names: "list[str] | tuple[str, ...]", field: str = "partition"
) -> tuple[str, ...]:
    """The values of `key` for dimensions `names`, or InputError saying what is wrong."""
    validate_partition_key(key, field)
    values = split_dimensions(key, names)
    if values is None:
        example = join_dimensions([(n, "VALUE") for n in names])
        raise InputError(
            field,
            f"{show_key(key)} is not a key of dimensions {list(names)}: write {example!r}"
            " (each value ASCII letters, digits and '-_.:')",
        )
    return values
