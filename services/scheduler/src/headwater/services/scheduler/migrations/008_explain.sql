-- How many times a task's transform ran, summed over its requests (`attempts` counts the
-- requests): a final failure adds the deliveries the executor reports, a success one.
ALTER TABLE tasks ADD COLUMN executions int NOT NULL DEFAULT 0;
-- A derived partition that went away (what it read was retracted, or nothing maps to it any
-- more): when, why, and what it was, so `why` answers for it. One row per partition: the
-- latest time it went; a partition that exists again is answered from `partitions`.
CREATE TABLE retractions (
    dataset text NOT NULL,
    partition_key text NOT NULL,
    retracted_at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL,
    inputs jsonb NOT NULL,        -- the inputs that went: [{dataset, partition_key}]
    state text NOT NULL,          -- the state it was in
    fingerprint text,             -- of its materialization then (none if it had none)
    data_sha text,
    rows bigint,
    PRIMARY KEY (dataset, partition_key)
);
