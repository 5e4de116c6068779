"""Summarise a py-spy raw (collapsed) profile: the frames most samples pass through.
`python -m tests.bench._profile FILE [N]` (profiles come from HEADWATER_BENCH_PROFILE_DIR)."""

from __future__ import annotations

import collections
import sys
from pathlib import Path


def top_frames(path: Path, n: int = 15, skip: tuple[str, ...] = ("asyncio/", "<module>")) -> str:
    """The `n` frames with the largest inclusive share of samples, event-loop frames left out."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        for frame in set(stack.split(";")):
            if not any(s in frame for s in skip) and "runpy" not in frame:
                inclusive[frame] += samples
    rows = [f"{100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(n)]
    return f"{path.name}: {total} samples\n" + "\n".join(rows)


if __name__ == "__main__":
    print(top_frames(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
