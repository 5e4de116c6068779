-- Each carrier over the 7 days ending at this day: its share of late departures and its
-- mean departure delay (from integer sums, so the result does not depend on row order).
SELECT
    carrier,
    max(day) AS through,
    count(DISTINCT day) AS days,
    sum(flights)::BIGINT AS flights,
    sum(late)::BIGINT AS late,
    round(sum(late) / sum(flights), 4) AS late_share,
    round(sum(dep_delay_minutes) / sum(flights), 2) AS avg_dep_delay
FROM carrier_delays
GROUP BY carrier
