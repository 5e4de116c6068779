"""What every benchmark reports: a figure, the reference measured in the same run, their ratio
and the issue's target; the sizes a run uses (`HEADWATER_BENCH_SIZE=small` for a quick one)."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class BenchSizes(BaseSettings):
    """Sizes of one run. `make bench` uses the issue's; `HEADWATER_BENCH_SIZE=small` (or any
    `HEADWATER_BENCH_*` field) shrinks them for development and for the harness's own test."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_BENCH_", extra="ignore")

    size: str = "full"
    flights_days: int = 365  # the flights graph: 365 days -> 1,108 steps, a 743-run backfill
    trivial_days: int = 365  # the same graph over tiny inputs and trivial SQL
    nats_messages: int = 5_000  # the raw JetStream publish+pull+ack reference
    held_small: int = 1_000  # partitions held for the reaction's reference
    held_large: int = 100_000  # partitions held for the reaction and the code change
    held_series: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # scheduler-only linearity
    reactions: int = 5  # landings timed at each size (the median counts)
    concurrent_days: int = 62  # days landing one every `concurrent_gap_s` while others run
    concurrent_gap_s: float = 0.1
    trickle_days: int = 4  # days landing one at a time, quiet in between
    hash_repeat: int = 3
    op_timeout_s: float = 120  # a scheduler call running longer is stopped and reported

    @classmethod
    def load(cls) -> BenchSizes:
        sizes = cls()
        if sizes.size == "small":
            small = {
                "flights_days": 20,
                "trivial_days": 20,
                "nats_messages": 1_000,
                "held_small": 300,
                "held_large": 3_000,
                "held_series": (1_000, 3_000, 9_000),
                "reactions": 3,
                "concurrent_days": 10,
                "trickle_days": 2,
                "hash_repeat": 1,
                "op_timeout_s": 60,
            }
            explicit = {k for k in cls.model_fields if f"HEADWATER_BENCH_{k.upper()}" in os.environ}
            sizes = sizes.model_copy(update={k: v for k, v in small.items() if k not in explicit})
        elif sizes.size != "full":
            raise ValueError(f"HEADWATER_BENCH_SIZE: {sizes.size!r} is not 'full' or 'small'")
        return sizes


@dataclass
class Figure:
    """One measured figure. `ratio` is value ÷ reference when a reference was measured; the
    target applies to the ratio when there is one, else to the value."""

    bench: str
    figure: str
    value: float
    unit: str
    reference: str | None = None
    reference_value: float | None = None
    ratio: float | None = None
    target: str | None = None  # ">= 0.03", "<= 8" ...
    met: bool | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.reference_value and self.ratio is None:
            self.ratio = self.value / self.reference_value
        if self.target is not None and self.met is None:
            op, bound = self.target.split()
            measured = self.ratio if self.ratio is not None else self.value
            self.met = measured >= float(bound) if op == ">=" else measured <= float(bound)


def _shown(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(figures: list[Figure]) -> str:
    """The figures as a plain-text table, one line each."""
    head = ("bench", "figure", "value", "unit", "reference", "ratio", "target", "met")
    rows = [
        (
            f.bench,
            f.figure,
            _shown(f.value),
            f.unit,
            f"{f.reference} = {_shown(f.reference_value)}" if f.reference else "",
            _shown(f.ratio),
            f.target or "",
            {True: "yes", False: "NO", None: ""}[f.met],
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write(figures: list[Figure], sizes: BenchSizes, path: Path, seconds: float) -> None:
    """`bench/results.json`: the machine, the sizes, and every figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": _cpu_model(),
        },
        "sizes": sizes.model_dump(),
        "seconds": round(seconds, 1),
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def rss_peak_mb(pid: int) -> float:
    """A live process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for pid {pid}")
