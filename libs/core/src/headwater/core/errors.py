"""Errors of the pure core: a spec that cannot be applied names file, dataset and field.

SpecError(InputError)   permanent; the message is "FILE: dataset NAME: FIELD: REASON"
(the tree of every Headwater error is drawn in headwater.contracts.errors)
"""

from headwater.contracts.errors import InputError


class SpecError(InputError):
    """A pipeline spec that cannot be applied, with where and why (`field` None: the whole
    file or dataset)."""

    def __init__(
        self, file: str, reason: str, *, dataset: str | None = None, field: str | None = None
    ):
        where = file
        if dataset:
            where += f": dataset {dataset!r}"
        if field:
            where += f": {field}"
        super().__init__(field or "spec", reason, message=f"{where}: {reason}")
        self.file = file
        self.dataset = dataset
        self.field = field

    def reply(self) -> tuple[str, str]:
        return self.field or "spec", str(self)
