-- The code SHA that made each edge's output (`headwater lineage` shows it beside the data SHAs).
-- Edges recorded before take it from the event that reported their materialization.
ALTER TABLE edges ADD COLUMN code_sha text;
UPDATE edges e SET code_sha = ev.payload ->> 'code_sha'
FROM events ev
WHERE ev.kind = 'partition_landed' AND ev.dataset = e.output_dataset
  AND ev.partition_key = e.output_key AND ev.payload ->> 'fingerprint' = e.fingerprint;
