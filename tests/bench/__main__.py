"""Run every benchmark module in this package and print one table of their results."""

from __future__ import annotations

import importlib
import pkgutil

import tests.bench


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    for info in sorted(pkgutil.iter_modules(tests.bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"tests.bench.{info.name}")
        for metric, value in module.run().items():
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            rows.append((info.name, metric, shown))
    widths = [max(len(row[i]) for row in [("bench", "metric", "value"), *rows]) for i in range(3)]
    for i, row in enumerate([("bench", "metric", "value"), *rows]):
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
