-- Each dataset's column lineage as computed from the spec when it was applied
-- (headwater.core.columns.DatasetColumns as JSON); NULL for a dataset applied before.
ALTER TABLE datasets ADD COLUMN columns json;
