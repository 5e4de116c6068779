-- An output partition that some of its inputs have and others lack (a join with one side
-- missing): shown as `waiting` with the missing input as its reason, and invisible to what
-- reads it, which waits for it no more than for a partition that does not exist.
ALTER TABLE partitions ADD COLUMN incomplete boolean NOT NULL DEFAULT false;
