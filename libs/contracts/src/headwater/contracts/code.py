"""Code events: a dataset's definition changed (new code SHA), or it was removed."""

from typing import Literal

from pydantic import Field

from headwater.contracts.base import Event


class InputDefinition(Event):
    """One input of a derived dataset and how its partitions map to the output's."""

    dataset: str
    mapping: str = "identity"
    size: int | None = None
    pattern: str | None = None


class DatasetDefinition(Event):
    """What the scheduler and executors need of a dataset, named by its code SHA.

    `timeout_s` and `memory_mb` bound one run of its transform (None: the executor's
    defaults); `settle_s`: how long its inputs must stay unchanged before the scheduler asks
    for a new computation of a partition (None: at once). They do not change the output, so
    they are not part of the code SHA."""

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


class CodeChanged(Event):
    """Published by spec-registry when a dataset's code SHA changes (or it is removed)."""

    schema_version: Literal[1] = 1
    event_id: str
    spec_version: int
    dataset: DatasetDefinition
    previous_code_sha: str | None = None
    removed: bool = False


class CodeBlob(Event):
    """A transform's code as spec-registry stores it in the code bucket (`CODE_SHA.json`) and
    executors load it: SQL text, or a Python module's source and the function to call."""

    schema_version: Literal[1] = 1
    kind: Literal["sql", "python"]
    code: str
    function: str | None = None
