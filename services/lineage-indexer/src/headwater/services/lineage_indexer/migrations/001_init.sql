-- lineage-indexer: every event it saw (run history) and the partition-level lineage graph.
CREATE TABLE events (
    event_id text PRIMARY KEY,
    subject text NOT NULL,
    kind text NOT NULL,
    dataset text NOT NULL,
    partition_key text,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_partition ON events (dataset, partition_key, received_at);
CREATE TABLE edges (
    fingerprint text NOT NULL,
    input_dataset text NOT NULL,
    input_key text NOT NULL,
    input_data_sha text NOT NULL,
    output_dataset text NOT NULL,
    output_key text NOT NULL,
    output_data_sha text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fingerprint, input_dataset, input_key)
);
CREATE INDEX edges_output ON edges (output_dataset, output_key);
CREATE INDEX edges_input ON edges (input_dataset, input_key);
