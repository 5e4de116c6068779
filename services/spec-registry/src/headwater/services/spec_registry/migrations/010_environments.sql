-- Environments (docs/architecture.md, "Environments"): every spec version and definition
-- belongs to one; `prod` is the default, and the only one before this migration. A new
-- environment starts as a copy of prod's definitions (rows of this table, not data).
ALTER TABLE spec_versions ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE datasets ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE datasets DROP CONSTRAINT datasets_pkey;
ALTER TABLE datasets ADD PRIMARY KEY (env, name);
