"""`make bench`: run every benchmark, print one table, write bench/results.json.
`HEADWATER_BENCH_SIZE=small` for a quick run; HEADWATER_BENCH_ONLY=hashing,scale to pick."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from tests.bench import hashing, pipeline, scale
from tests.bench._figures import BenchSizes, Figure, table, write

BENCHES = {"hashing": hashing.run, "scale": scale.run, "pipeline": pipeline.run}


def main() -> int:
    sizes = BenchSizes.load()
    only = [b for b in os.environ.get("HEADWATER_BENCH_ONLY", "").split(",") if b]
    unknown = set(only) - set(BENCHES)
    if unknown:
        print(f"HEADWATER_BENCH_ONLY: unknown {sorted(unknown)}; known {sorted(BENCHES)}")
        return 2
    out = Path(os.environ.get("HEADWATER_BENCH_RESULTS", "bench/results.json"))
    figures: list[Figure] = []
    start = time.perf_counter()
    for name, bench in BENCHES.items():
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        figures += bench(sizes)
    write(figures, sizes, out, time.perf_counter() - start)
    print(table(figures))
    missed = [f.figure for f in figures if f.met is False]
    print(f"\n{len(figures)} figures in {out}; {len(missed)} miss their target")
    return 0 if all(not math.isnan(f.value) or f.note for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
