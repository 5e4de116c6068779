"""The example's Python transforms: each a function of pyarrow Tables (one argument per
input, named after it) returning a pyarrow Table."""

import pyarrow as pa


def weather_daily(weather: pa.Table) -> pa.Table:
    """One row per airport for the day, from its hourly readings."""
    daily = weather.group_by("origin").aggregate(
        [
            ("hour", "count"),
            ("temp", "min"),
            ("temp", "max"),
            ("precip", "sum"),
            ("visib", "min"),
            ("wind_speed", "max"),
        ]
    )
    measures = ["hour_count", "temp_min", "temp_max", "precip_sum", "visib_min", "wind_speed_max"]
    names = ["readings", "min_temp", "max_temp", "precip", "min_visib", "max_wind_speed"]
    out = daily.select(["origin", *measures]).rename_columns(["origin", *names])
    return out
