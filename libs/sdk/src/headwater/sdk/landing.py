"""What `headwater publish DATASET PATH...` lands: a file is a partition keyed by its name's
stem (`2013-01-02.csv` -> `2013-01-02`), a folder a partition keyed by its name holding
every file in it; a PATH may be a glob. Checked whole before anything is published."""

import glob
from dataclasses import dataclass
from pathlib import Path

from headwater.contracts import InputError, format_of, validate_partition_key

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Landing:
    """One file to land: as `name` in source partition `partition`."""

    partition: str
    file: Path
    name: str


def is_glob(target: str) -> bool:
    return any(c in GLOB_CHARS for c in target)


def landings(targets: list[str]) -> list[Landing]:
    """The files `targets` name, each with its partition, in partition order. A target is a
    file, a directory (its files and folders, not those whose name starts with `.`) or a glob
    of them. InputError (field `path`, or `partition` for a name that is not a key) names the
    path at fault; nothing is landed unless every path is good."""
    if not targets:
        raise InputError("path", "name a file, a directory or a glob to publish")
    entries: list[Path] = []
    for target in targets:
        if is_glob(target):
            matched = sorted(Path(p) for p in glob.glob(target))
            if not matched:
                raise InputError("path", f"{target!r} matches no file or folder")
            entries += matched
        elif Path(target).is_dir():
            inside = sorted(p for p in Path(target).iterdir() if not p.name.startswith("."))
            if not inside:
                raise InputError("path", f"{target} holds no file or folder to publish")
            entries += inside
        elif Path(target).is_file():
            entries.append(Path(target))
        else:
            raise InputError("path", f"{target} does not exist")
    out: list[Landing] = []
    by_partition: dict[str, Path] = {}
    for entry in entries:
        if entry.is_dir():
            key = _key(entry.name, entry)
            inside = sorted(p for p in entry.iterdir() if p.is_file())
            if not inside:
                raise InputError("path", f"{entry} (partition {key}) holds no file")
            found = [Landing(key, f, _name(f)) for f in inside]
        else:
            found = [Landing(_key(_stem(entry), entry), entry, _name(entry))]
        key = found[0].partition
        if key in by_partition and by_partition[key] != entry:
            raise InputError(
                "partition", f"{key} is named twice: by {by_partition[key]} and by {entry}"
            )
        by_partition[key] = entry
        out += found
    return sorted(out, key=lambda landing: (landing.partition, landing.name))


def _stem(path: Path) -> str:
    """The name without its format extension (`2013-01-02.csv` -> `2013-01-02`)."""
    _name(path)
    return path.name.rsplit(".", 1)[0]


def _name(path: Path) -> str:
    try:
        format_of(path.name)
    except InputError as exc:
        raise InputError("path", f"{path}: {exc.reason}") from None
    return path.name


def _key(key: str, path: Path) -> str:
    try:
        return validate_partition_key(key)
    except InputError as exc:
        raise InputError("partition", f"{path}: {exc.reason}") from None
