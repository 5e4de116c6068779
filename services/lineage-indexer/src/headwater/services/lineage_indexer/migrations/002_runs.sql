-- Runs, for OpenLineage: one row per run (a source landing, a materialization, a task that
-- failed for good), named by a UUID derived from the event that reported it. A run caused by
-- another (the same trace, reading what that one produced) keeps its parent and the root of
-- its chain, so a redelivered event is emitted again exactly as the first time.
CREATE TABLE runs (
    event_id text PRIMARY KEY REFERENCES events (event_id),
    run_id uuid NOT NULL UNIQUE,
    dataset text NOT NULL,
    partition_key text NOT NULL,
    data_sha text,  -- what it produced; null for a failure
    trace_id text,
    parent_run_id uuid,
    parent_dataset text,
    root_run_id uuid,
    root_dataset text
);
CREATE INDEX runs_output ON runs (dataset, partition_key, data_sha);
