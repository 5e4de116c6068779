-- scheduler: desired and current state of every partition, materializations, tasks.
CREATE TABLE datasets (
    name text PRIMARY KEY,
    code_sha text NOT NULL,
    definition jsonb NOT NULL,
    removed boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- state: ready (up to date) | waiting (an input is not ready) | queued (task requested)
--        | errored (its transform failed) | blocked (an input errored)
CREATE TABLE partitions (
    dataset text NOT NULL,
    partition_key text NOT NULL,
    state text NOT NULL,
    fingerprint text,             -- of the current materialization
    data_sha text,
    object_key text,
    rows bigint,
    bytes bigint,
    desired_fingerprint text,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, partition_key)
);
CREATE TABLE materializations (
    fingerprint text PRIMARY KEY,
    fingerprint_version int NOT NULL,
    dataset text NOT NULL,
    partition_key text NOT NULL,
    code_sha text,
    data_sha text NOT NULL,
    object_key text NOT NULL,
    rows bigint NOT NULL,
    bytes bigint NOT NULL,
    inputs jsonb NOT NULL,
    reason text,
    duration_ms double precision,
    trace_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX materializations_partition ON materializations (dataset, partition_key, created_at);
CREATE TABLE tasks (
    fingerprint text PRIMARY KEY,
    dataset text NOT NULL,
    partition_key text NOT NULL,
    state text NOT NULL,          -- requested | succeeded | failed
    attempts int NOT NULL DEFAULT 1,
    reason text,
    error text,
    traceback text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE inbox (
    event_id text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
