-- A materialization whose object was found missing or damaged when read (the reason): it is
-- not reused; the partition it backs is recomputed (or its reader errored, for a source).
ALTER TABLE materializations ADD COLUMN damaged text;
CREATE INDEX materializations_object ON materializations (object_key);
