-- Each carrier's departures from each NYC airport on the day, with that airport's weather.
-- A departure is late when it left more than 15 minutes behind schedule.
SELECT
    f.day,
    f.carrier,
    f.origin,
    count(*) AS flights,
    count(*) FILTER (WHERE f.dep_delay > 15) AS late,
    sum(f.dep_delay)::BIGINT AS dep_delay_minutes,
    w.precip,
    w.min_visib,
    w.max_wind_speed
FROM flights_clean AS f
JOIN weather_daily AS w ON w.origin = f.origin
GROUP BY f.day, f.carrier, f.origin, w.precip, w.min_visib, w.max_wind_speed
