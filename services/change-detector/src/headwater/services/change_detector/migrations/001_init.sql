-- change-detector: the last known data SHA of every source partition.
CREATE TABLE source_partitions (
    dataset text NOT NULL,
    partition_key text NOT NULL,
    data_sha text,               -- NULL once retracted (its files were deleted)
    object_key text,
    files jsonb NOT NULL,
    rows bigint NOT NULL,
    bytes bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, partition_key)
);
