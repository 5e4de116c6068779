"""The CLI's check of a spec before it is sent, in the user's own process: what spec-registry
checks, plus that each Python transform imports. Importing runs the user's module, so it is
done only here, never in a service (spec-registry reads Python as an AST)."""

import sys
from pathlib import Path
from typing import Any

from headwater.core.errors import SpecError
from headwater.core.spec import Pipeline, parse_pipeline
from headwater.core.spec_input import SpecLimits
from headwater.sdk.spec_files import read_document

# The size and count limits are spec-registry's settings, so it alone enforces them; the YAML
# bounds protect this process too.
LOCAL_LIMITS = SpecLimits(
    max_spec_bytes=sys.maxsize, max_code_bytes=sys.maxsize, max_datasets=sys.maxsize
)


def check_spec(path: Path) -> Pipeline:
    """The validated pipeline of the spec at `path`; SpecError naming file, dataset and field."""
    doc = read_document(path)
    pipeline = parse_pipeline(doc, LOCAL_LIMITS)
    for ds in pipeline.datasets.values():
        if ds.kind == "python":
            check_imports(doc.file, ds.name, ds.code, ds.function or "")
    return pipeline


def check_imports(file: str, dataset: str, source: str, function: str) -> None:
    """Run the module as the executor will, and find `function` in it."""
    namespace: dict[str, Any] = {"__name__": "headwater_transform"}  # as the executor runs it
    try:
        exec(compile(source, f"<{dataset}>", "exec"), namespace)
    except (Exception, SystemExit) as exc:
        raise SpecError(
            file,
            f"Python does not import: {type(exc).__name__}: {exc}",
            dataset=dataset,
            field="python",
        ) from exc
    if not callable(namespace.get(function)):
        raise SpecError(
            file, f"{function!r} is not a function of the module", dataset=dataset, field="python"
        )
