-- The 2013 scorecard: every carrier over every day held, by name, ranked by on-time share.
SELECT
    rank() OVER (ORDER BY sum(c.late) / sum(c.flights), c.carrier) AS rank,
    c.carrier,
    a.name AS airline,
    count(DISTINCT c.day) AS days,
    sum(c.flights)::BIGINT AS flights,
    sum(c.late)::BIGINT AS late,
    round(1 - sum(c.late) / sum(c.flights), 4) AS on_time_share,
    round(sum(c.dep_delay_minutes) / sum(c.flights), 2) AS avg_dep_delay
FROM carrier_delays AS c
JOIN airlines AS a ON a.carrier = c.carrier
WHERE year(c.day) = 2013
GROUP BY c.carrier, a.name
