"""Code events: a dataset's definition changed (new code SHA), or it was removed."""

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from headwater.contracts.base import Event
from headwater.contracts.keys import ENV_NAME_PATTERN

# The default environment: what every command means without `--env`.
PROD_ENV = "prod"


class _OmitsNoDimensions(Event):
    """A model whose `dimensions` is left out of its JSON when None, so that everything
    declared without dimensions travels and is stored byte for byte as before they existed."""

    @model_serializer(mode="wrap")
    def _omit_no_dimensions(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("dimensions", 0) is None:
            del data["dimensions"]
        return data


class Dimension(Event):
    """One named dimension of a partitioned dataset: the values it may take, as an RE2
    `pattern` a value must match whole, or a fixed list of `values` (a derived dataset's
    dimensions carry their names only)."""

    name: str
    pattern: str | None = None
    values: tuple[str, ...] | None = None


class DimensionMapping(Event):
    """How one dimension of an input maps to the output's (the mapping kinds of
    `InputDefinition`, applied to that dimension's values)."""

    dimension: str
    mapping: str = "identity"
    size: int | None = None
    pattern: str | None = None


class InputDefinition(_OmitsNoDimensions):
    """One input of a derived dataset and how its partitions map to the output's. An input
    with dimensions maps each of them (`mapping` is then `dimensions`), in the input's order."""

    dataset: str
    mapping: str = "identity"
    size: int | None = None
    pattern: str | None = None
    dimensions: tuple[DimensionMapping, ...] | None = None


class DatasetDefinition(_OmitsNoDimensions):
    """What the scheduler and executors need of a dataset, named by its code SHA.

    `timeout_s` and `memory_mb` bound one run of its transform (None: the executor's
    defaults); `settle_s`: how long its inputs must stay unchanged before the scheduler asks
    for a new computation of a partition (None: at once). They do not change the output, so
    they are not part of the code SHA. `dimensions`: its named partition dimensions, in the
    order its keys join them (headwater.contracts.keys.join_dimensions); None: keys are plain."""

    name: str
    kind: Literal["source", "sql", "python"]
    code_sha: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: tuple[InputDefinition, ...] = ()
    ordered: bool = False
    # A source's declared columns (name -> Arrow type name): its data contract.
    columns: dict[str, str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    settle_s: float | None = Field(default=None, gt=0)
    dimensions: tuple[Dimension, ...] | None = None


class CodeChanged(Event):
    """Published by spec-registry when a dataset's code SHA changes (or it is removed)."""

    schema_version: Literal[1] = 1
    event_id: str
    spec_version: int
    dataset: DatasetDefinition
    previous_code_sha: str | None = None
    removed: bool = False
    # The environment whose definition this is (docs/architecture.md, "Environments"):
    # `prod`, the default, unless applied with `--env`.
    env: str = Field(default=PROD_ENV, pattern=ENV_NAME_PATTERN)
    # Set when `headwater promote ENV` made this definition prod's: what that environment
    # computed for the dataset becomes prod's own (kept when the environment is dropped).
    promoted_from: str | None = None


class CodeBlob(Event):
    """A transform's code as spec-registry stores it in the code bucket (`CODE_SHA.json`) and
    executors load it: SQL text, or a Python module's source and the function to call."""

    schema_version: Literal[1] = 1
    kind: Literal["sql", "python"]
    code: str
    function: str | None = None
