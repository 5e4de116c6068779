"""Code events: a dataset's definition changed (new code SHA), or it was removed."""

from typing import Literal

from pydantic import Field

from headwater.contracts.base import Event
from headwater.contracts.keys import ENV_NAME_PATTERN

# The default environment: what every command means without `--env`.
PROD_ENV = "prod"


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
    # The environment whose definition this is (docs/architecture.md, "Environments"):
    # `prod`, the default, unless applied with `--env`.
    env: str = Field(default=PROD_ENV, pattern=ENV_NAME_PATTERN)
    # Set when `headwater promote ENV` made this definition prod's: what that environment
    # computed for the dataset becomes prod's own (kept when the environment is dropped).
    promoted_from: str | None = None
