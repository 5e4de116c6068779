-- A definition is kept as written (json), not as jsonb, which reorders object keys: a source's
-- declared columns are an ordered list (the order its partitions are landed in, which their
-- data SHAs and `SELECT *` follow), written as a YAML mapping. A definition stored before keeps
-- the order jsonb gave it until the next apply, which sees the difference and announces it.
ALTER TABLE datasets ALTER COLUMN definition TYPE json USING definition::text::json;
