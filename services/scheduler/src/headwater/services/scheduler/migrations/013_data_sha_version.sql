-- The data SHA version (headwater.core.hashing.DATA_SHA_VERSION) a materialization's data SHA
-- was computed under, as its producer (the executor, or the change-detector for a source)
-- says in `partition landed`; beside `fingerprint_version`. NULL for materializations
-- recorded before, and for events of producers that did not say it.
ALTER TABLE materializations ADD COLUMN data_sha_version int;
