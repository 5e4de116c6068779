-- A partition of a dataset with a settle delay (`settle:` in the spec) whose new computation
-- is held until its inputs stop changing: the fingerprint it will ask for, when its inputs
-- first changed, when it is due (each change pushes it back, up to a cap), and how many
-- changes it coalesces. The row goes when the task is asked for, or is no longer needed.
CREATE TABLE settling (
    dataset text NOT NULL,
    partition_key text NOT NULL,
    fingerprint text NOT NULL,
    first_at timestamptz NOT NULL,
    due_at timestamptz NOT NULL,
    changes int NOT NULL,
    PRIMARY KEY (dataset, partition_key)
);
CREATE INDEX settling_due ON settling (due_at);
