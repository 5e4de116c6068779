"""Limits on spec input, checked before a spec is parsed further or stored, and the bounded
YAML loader: it refuses a document nested too deeply, or one whose aliases expand it past a
node count (an alias bomb), from the parser's event stream, before any value is built."""

import reprlib
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from headwater.core.errors import SpecError


class SpecLimits(BaseModel):
    """The bounds a spec must keep; spec-registry reads them from its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_spec_bytes: int = 1024 * 1024  # the YAML text
    max_code_bytes: int = 256 * 1024  # one SQL or Python file, or inline SQL
    max_datasets: int = 1000  # sources and datasets of one pipeline
    max_yaml_depth: int = 32  # nested mappings and sequences
    max_yaml_nodes: int = 100_000  # values in the document once its aliases are expanded


# The setting that raises each limit, named in the error so an operator knows what to change.
SETTING = {
    "max_spec_bytes": "HEADWATER_SPEC_MAX_BYTES",
    "max_code_bytes": "HEADWATER_SPEC_MAX_CODE_BYTES",
    "max_datasets": "HEADWATER_SPEC_MAX_DATASETS",
    "max_yaml_depth": "HEADWATER_SPEC_MAX_YAML_DEPTH",
    "max_yaml_nodes": "HEADWATER_SPEC_MAX_YAML_NODES",
}


def _repr() -> reprlib.Repr:
    r = reprlib.Repr()  # keyword arguments only from Python 3.12
    r.maxlevel, r.maxstring, r.maxother, r.maxlist, r.maxdict = 2, 60, 60, 4, 4
    return r


_short = _repr()


def show(value: object) -> str:
    """A bounded repr of a user's value for an error message: never the whole value."""
    return _short.repr(value)


def too_big(what: str, size: int, limit: str, limits: SpecLimits) -> str:
    """The reason for a value over a size limit."""
    return (
        f"{what} is {size} bytes, more than the {getattr(limits, limit)} allowed "
        f"(spec-registry setting {SETTING[limit]})"
    )


def load_yaml(file: str, text: str, limits: SpecLimits) -> Any:
    """`yaml.safe_load(text)` once `text` is known to keep within the depth and expanded-node
    limits; SpecError (naming the field where it went over) otherwise, or on invalid YAML."""
    try:
        _check_structure(file, text, limits)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(file, f"is not valid YAML: {exc}") from exc


@dataclass
class _Open:
    """A mapping or sequence being read, and where in it the parser is."""

    mapping: bool
    start: int  # nodes counted before it opened
    anchor: str | None
    key: str | None = None  # mapping: the key whose value is being read
    expecting_key: bool = True
    index: int = 0  # sequence: the item being read


def _check_structure(file: str, text: str, limits: SpecLimits) -> None:
    stack: list[_Open] = []
    anchors: dict[str, int] = {}  # anchor -> nodes of its value, expanded
    nodes = 0
    aliased = False
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= limits.max_yaml_depth:
                raise SpecError(
                    file,
                    f"nests deeper than {limits.max_yaml_depth} levels "
                    f"(spec-registry setting {SETTING['max_yaml_depth']})",
                    field=_path(stack),
                )
            nodes += 1
            mapping = isinstance(event, yaml.MappingStartEvent)
            stack.append(_Open(mapping=mapping, start=nodes - 1, anchor=event.anchor))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = nodes - done.start
            _advance(stack, None)
            continue
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                anchors[event.anchor] = 1
            _advance(stack, event.value)
        elif isinstance(event, yaml.AliasEvent):
            aliased = True
            nodes += anchors.get(event.anchor or "", 1)  # an unknown alias fails in safe_load
            _advance(stack, None)
        else:
            continue
        if nodes > limits.max_yaml_nodes:
            what = "aliases expand it past" if aliased else "has more than"
            raise SpecError(
                file,
                f"{what} {limits.max_yaml_nodes} values "
                f"(spec-registry setting {SETTING['max_yaml_nodes']})",
                field=_path(stack),
            )


def _advance(stack: list[_Open], scalar: str | None) -> None:
    """A node just ended inside the innermost open collection: move to its next place."""
    if not stack:
        return
    top = stack[-1]
    if not top.mapping:
        top.index += 1
    elif top.expecting_key:
        top.key = scalar[:64] if scalar is not None else "?"
        top.expecting_key = False
    else:
        top.key = None
        top.expecting_key = True


def _path(stack: list[_Open]) -> str | None:
    """Where the parser is, as `datasets.NAME.inputs` (sequence items by index)."""
    parts: list[str] = []
    for o in stack:
        if not o.mapping:
            parts.append(str(o.index))
        elif o.expecting_key or o.key is None:
            break
        else:
            parts.append(o.key)
    return ".".join(parts) or None
