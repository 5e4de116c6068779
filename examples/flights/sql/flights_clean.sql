-- The day's flights that left (a cancelled flight has no departure time), with the
-- destination airport's name.
SELECT
    make_date(f.year, f.month, f.day) AS day,
    f.carrier,
    f.flight,
    nullif(f.tailnum, '') AS tailnum,
    f.origin,
    f.dest,
    a.name AS dest_name,
    f.time_hour AS scheduled_hour,
    f.dep_delay,
    f.arr_delay,
    f.arr_time IS NULL AS diverted,
    f.air_time,
    f.distance
FROM flights AS f
LEFT JOIN airports AS a ON a.faa = f.dest
WHERE f.dep_time IS NOT NULL
