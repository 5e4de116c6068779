-- The data SHA version (headwater.core.hashing.DATA_SHA_VERSION) each stored data SHA was
-- computed under. A SHA stored under another version is never taken for the same content: the
-- partition is announced again when it is next hashed. NULL for rows stored before versions
-- were kept (version 1 or 2: nothing stored says which), and for a retracted partition.
ALTER TABLE source_partitions ADD COLUMN data_sha_version int;
