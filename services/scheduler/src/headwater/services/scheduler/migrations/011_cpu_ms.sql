-- The CPU time the executor's worker spent computing a materialization (decoding and
-- verifying its inputs, the transform, hashing and encoding), beside `duration_ms` (fetch to
-- result, waits included). NULL for materializations recorded before.
ALTER TABLE materializations ADD COLUMN cpu_ms double precision;
