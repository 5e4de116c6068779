-- The code SHA version (headwater.core.hashing.CODE_SHA_VERSION) each dataset's code SHA was
-- computed under. Every code SHA so far was computed under version 1, the only one there has
-- been. An apply that finds a stored code SHA of another version announces the dataset's code
-- as changed, even when the two SHAs are equal: a SHA is compared only with one of its version.
ALTER TABLE datasets ADD COLUMN code_sha_version int NOT NULL DEFAULT 1;
ALTER TABLE datasets ALTER COLUMN code_sha_version DROP DEFAULT;
