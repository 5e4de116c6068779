-- Departure delays per origin airport, one row per airport for the day.
SELECT
    origin,
    count(*) AS flights,
    count(dep_time) AS departed,
    round(avg(dep_delay), 2) AS avg_dep_delay,
    max(dep_delay) AS max_dep_delay
FROM flights
GROUP BY origin
