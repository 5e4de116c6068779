-- Scoped loading (headwater.core.mappings.Scope) asks for "the n keys at or before / after a
-- key" and "keys with a prefix", in code-point order like Python's sorted(): an index in the
-- C collation answers each with a short range scan, whatever the database's collation.
CREATE INDEX partitions_key_c ON partitions (dataset, (partition_key COLLATE "C"));
