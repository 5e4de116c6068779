"""A pipeline spec read from disk: the spec file and every file it names (relative to it), as
the document spec-registry is sent. The core parses and validates; reading is done here."""

from pathlib import Path

from headwater.contracts.rpc import PipelineDocument
from headwater.core.errors import SpecError
from headwater.core.spec import named_files


def read_document(path: Path) -> PipelineDocument:
    """Read a spec file and every file it names; SpecError names the one that cannot be read
    or is not UTF-8."""
    text = _read_text(path, str(path))
    files = {
        ref: _read_text(path.parent / ref, path.name, ref, dataset=dataset, field=field)
        for ref, dataset, field in named_files(path.name, text)
    }
    return PipelineDocument(file=path.name, yaml_text=text, files=files)


def _read_text(
    path: Path,
    file: str,
    ref: str | None = None,
    *,
    dataset: str | None = None,
    field: str | None = None,
) -> str:
    """The UTF-8 text of `path` (the spec itself, or the file `ref` it names); SpecError if it
    cannot be read or is not UTF-8, naming where its first bad byte is."""
    what = "cannot read" if ref is None else f"cannot read {ref!r}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(file, f"{what}: {exc.strerror}", dataset=dataset, field=field) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = (
            f"{what}: it is not UTF-8 text (byte {data[exc.start]:#04x} at line {line}, "
            f"offset {exc.start})"
        )
        raise SpecError(file, reason, dataset=dataset, field=field) from exc
    # Newlines as text mode reads them (\r\n and \r become \n), as before.
    return text.replace("\r\n", "\n").replace("\r", "\n")
