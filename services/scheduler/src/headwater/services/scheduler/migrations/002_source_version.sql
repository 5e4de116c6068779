-- The change-detector's version of a source partition's content: an older (reordered or
-- replayed) `partition landed` never overwrites a newer one.
ALTER TABLE partitions ADD COLUMN source_version bigint;
