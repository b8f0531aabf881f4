#!/usr/bin/env bash
# Creates the `strata` bucket and a `strata` user with access to it on the local MinIO
# started by minio/docker-compose.yml. Needs the MinIO client `mc` (or runs it from the
# minio/mc image when docker is available).
set -euo pipefail
ENDPOINT=${MINIO_ENDPOINT:-http://127.0.0.1:9000}
mc_cmd() {
  if command -v mc >/dev/null; then mc "$@"; else docker run --rm --network host minio/mc "$@"; fi
}
mc_cmd alias set strata-local "$ENDPOINT" minioadmin minioadmin
mc_cmd mb --ignore-existing strata-local/strata
mc_cmd admin user add strata-local strata strata-secret-key || true
mc_cmd admin policy attach strata-local readwrite --user strata || true
echo "bucket strata ready; source minio/strata.env and run:"
echo "  strata server --object-store s3://strata/dev"
