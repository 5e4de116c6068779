-- A source partition's content can go A -> B -> A: each new data SHA gets the next version,
-- so its `partition landed` event is distinct and a reordered older one can be recognised.
ALTER TABLE source_partitions ADD COLUMN version bigint NOT NULL DEFAULT 1;
