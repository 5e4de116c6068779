-- Environments (docs/architecture.md, "Environments"). Each definition belongs to one; a
-- partition row belongs to one and, outside prod, exists only where the environment's state
-- differs from prod's (an environment's view is its own rows over prod's). Materializations
-- and tasks stay shared by fingerprint: `env` there says whose request made them (a dropped
-- environment's objects that nothing else references are deleted).
ALTER TABLE datasets ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE datasets DROP CONSTRAINT datasets_pkey;
ALTER TABLE datasets ADD PRIMARY KEY (name, env);
ALTER TABLE partitions ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE partitions DROP CONSTRAINT partitions_pkey;
ALTER TABLE partitions ADD PRIMARY KEY (dataset, partition_key, env);
ALTER TABLE retractions ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE retractions DROP CONSTRAINT retractions_pkey;
ALTER TABLE retractions ADD PRIMARY KEY (dataset, partition_key, env);
ALTER TABLE settling ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE settling DROP CONSTRAINT settling_pkey;
ALTER TABLE settling ADD PRIMARY KEY (dataset, partition_key, env);
ALTER TABLE materializations ADD COLUMN env text NOT NULL DEFAULT 'prod';
ALTER TABLE tasks ADD COLUMN env text NOT NULL DEFAULT 'prod';
-- A dropped environment: events of its spec versions up to this one, still in flight, are
-- ignored (a later apply under the same name starts it anew).
CREATE TABLE dropped_envs (
    env text PRIMARY KEY,
    through_version int NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now()
);
