"""Synthetic source data shared by the end-to-end and fault tests."""

import io
import random

import pyarrow as pa
import pyarrow.csv as pacsv


def sales_csv(day: str, salt: int = 0) -> bytes:
    """A small, deterministic CSV of sales for one day (another salt, other rows)."""
    rng = random.Random(f"{day}:{salt}")
    rows = [
        {"region": rng.choice(["north", "south", "east"]), "amount": rng.randint(1, 100)}
        for _ in range(rng.randint(2, 8))
    ]
    sink = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()
