#!/bin/sh
# MinIO for the dev stack: the three buckets, the landing bucket's notifications to NATS, and
# one user per client with only the access it needs (policies/<user>.json). Runs in the
# minio-init container (image minio/mc) on every `docker compose up`, so each step is
# idempotent; the services start once it has exited 0.
#
#   user              policy (policies/)     may
#   spec-registry     spec-registry.json     write headwater-code
#   change-detector   change-detector.json   read landing, read/write headwater-data
#   executor          executor.json          read/write headwater-data, read headwater-code
#   upstream          upstream.json          write and delete in landing (the upstream SDK)
#   (scheduler and lineage-indexer use no object storage)
#
# Bucket names are the services' defaults (HEADWATER_LANDING_BUCKET etc.); change them here,
# in the policies and in docker-compose.yml together.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MINIO_SPEC_REGISTRY_SECRET_KEY:?}" "${MINIO_CHANGE_DETECTOR_SECRET_KEY:?}"
: "${MINIO_EXECUTOR_SECRET_KEY:?}" "${MINIO_UPSTREAM_SECRET_KEY:?}"

POLICIES=${POLICIES:-/policies}
# The target MinIO registers from MINIO_NOTIFY_NATS_*_PRIMARY (see docker-compose.yml).
NATS_ARN=arn:minio:sqs::PRIMARY:nats

tries=0
until mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "minio-init: MinIO did not accept the root credentials within 60s" >&2
        exit 1
    fi
    sleep 1
done

mc mb --ignore-existing local/landing local/headwater-data local/headwater-code

# Every object written to or removed from landing becomes a message on hw.s3.events (stream
# HW_UPSTREAM), which change-detector consumes.
mc event add --ignore-existing local/landing "$NATS_ARN" --event put,delete

# user SECRET: create or update the user, its policy hw-<user>, and attach the two.
add_user() {
    user=$1
    secret=$2
    mc admin policy create local "hw-$user" "$POLICIES/$user.json"
    mc admin user add local "$user" "$secret"
    # attach fails when the policy is attached already, so look first
    if ! mc admin user info local "$user" | grep -q "hw-$user"; then
        mc admin policy attach local "hw-$user" --user "$user"
    fi
}

add_user spec-registry "$MINIO_SPEC_REGISTRY_SECRET_KEY"
add_user change-detector "$MINIO_CHANGE_DETECTOR_SECRET_KEY"
add_user executor "$MINIO_EXECUTOR_SECRET_KEY"
add_user upstream "$MINIO_UPSTREAM_SECRET_KEY"

echo "minio-init: buckets, notifications and users are in place"
