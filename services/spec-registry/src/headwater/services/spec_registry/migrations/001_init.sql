-- spec-registry: spec versions, the current dataset definitions, code blobs by SHA.
CREATE TABLE spec_versions (
    version serial PRIMARY KEY,
    pipeline text NOT NULL,
    file text NOT NULL,
    document jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE datasets (
    name text PRIMARY KEY,
    pipeline text NOT NULL,
    kind text NOT NULL,
    code_sha text NOT NULL,
    definition jsonb NOT NULL,
    spec_version int NOT NULL REFERENCES spec_versions (version)
);
CREATE TABLE code_blobs (
    code_sha text PRIMARY KEY,
    kind text NOT NULL,
    blob jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
