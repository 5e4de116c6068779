#!/usr/bin/env bash
# One login role per Headwater service that has a Postgres schema, owning that schema only.
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d);
# the passwords come from the environment (docker-compose.yml, from .env). To change one
# later: ALTER ROLE ... PASSWORD, or remove the volume and start again.
#
#   role              schema            service
#   spec_registry     spec_registry     spec-registry
#   change_detector   change_detector   change-detector
#   scheduler         scheduler         scheduler
#   lineage_indexer   lineage           lineage-indexer
#   (the executor uses no Postgres)
#   grafana_reader    (reads scheduler) Grafana's pipeline view: SELECT only, read-only sessions
set -Eeo pipefail  # not -u: the image sources (not runs) this file when it is not executable

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${PG_SPEC_REGISTRY_PASSWORD:?}" "${PG_CHANGE_DETECTOR_PASSWORD:?}"
: "${PG_SCHEDULER_PASSWORD:?}" "${PG_LINEAGE_INDEXER_PASSWORD:?}" "${PG_GRAFANA_PASSWORD:?}"

# psql substitutes :'name' (a quoted literal) and :"name" (a quoted identifier) itself, so no
# password is ever spliced into SQL text by the shell.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v spec_registry_password="$PG_SPEC_REGISTRY_PASSWORD" \
    -v change_detector_password="$PG_CHANGE_DETECTOR_PASSWORD" \
    -v scheduler_password="$PG_SCHEDULER_PASSWORD" \
    -v lineage_indexer_password="$PG_LINEAGE_INDEXER_PASSWORD" \
    -v grafana_password="$PG_GRAFANA_PASSWORD" <<'SQL'
-- Nobody but the roles below (and the superuser) connects; nobody creates in public.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

CREATE ROLE spec_registry LOGIN PASSWORD :'spec_registry_password';
CREATE ROLE change_detector LOGIN PASSWORD :'change_detector_password';
CREATE ROLE scheduler LOGIN PASSWORD :'scheduler_password';
CREATE ROLE lineage_indexer LOGIN PASSWORD :'lineage_indexer_password';

-- CREATE on the database: the migrations runner (headwater.runtime.db.apply_migrations)
-- starts with CREATE SCHEMA IF NOT EXISTS, and Postgres checks that privilege before it
-- looks whether the schema exists. It also lets a role create other schemas; dropping it
-- needs the runner to skip that statement when its schema exists.
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE :"db"
    TO spec_registry, change_detector, scheduler, lineage_indexer;

CREATE SCHEMA spec_registry AUTHORIZATION spec_registry;
CREATE SCHEMA change_detector AUTHORIZATION change_detector;
CREATE SCHEMA scheduler AUTHORIZATION scheduler;
CREATE SCHEMA lineage AUTHORIZATION lineage_indexer;

-- Unqualified names resolve in the role's own schema only.
ALTER ROLE spec_registry SET search_path = spec_registry;
ALTER ROLE change_detector SET search_path = change_detector;
ALTER ROLE scheduler SET search_path = scheduler;
ALTER ROLE lineage_indexer SET search_path = lineage;
-- Grafana's pipeline view (deploy/grafana): reads the scheduler's tables, writes nothing. The
-- tables are created later, by the scheduler's migrations, so SELECT is granted by default on
-- what the role scheduler creates in its schema.
CREATE ROLE grafana_reader LOGIN PASSWORD :'grafana_password';
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET search_path = scheduler;
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA scheduler TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE scheduler IN SCHEMA scheduler
    GRANT SELECT ON TABLES TO grafana_reader;
SQL
