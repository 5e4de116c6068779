"""Errors of the pure core: a spec that cannot be applied names file, dataset and field.

SpecError(ValueError)   permanent; `where` is "FILE: dataset NAME: FIELD"
"""


class SpecError(ValueError):
    """A pipeline spec that cannot be applied, with where and why."""

    retryable = False

    def __init__(
        self, file: str, reason: str, *, dataset: str | None = None, field: str | None = None
    ):
        where = file
        if dataset:
            where += f": dataset {dataset!r}"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.dataset = dataset
        self.field = field
        self.reason = reason
