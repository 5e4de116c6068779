-- Processed event ids are pruned by age (inbox_retention_s): find the oldest without a scan.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
