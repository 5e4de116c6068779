-- Code blobs live in the code bucket (`CODE_SHA.json`), which executors read; this table was
-- written and never read.
DROP TABLE code_blobs;
