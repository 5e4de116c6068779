-- Each carrier's month: flights, late departures and mean delay.
SELECT
    strftime(min(day), '%Y-%m') AS month,
    carrier,
    count(DISTINCT day) AS days,
    sum(flights)::BIGINT AS flights,
    sum(late)::BIGINT AS late,
    round(sum(late) / sum(flights), 4) AS late_share,
    round(sum(dep_delay_minutes) / sum(flights), 2) AS avg_dep_delay
FROM carrier_delays
GROUP BY carrier
