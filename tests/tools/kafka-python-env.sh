#!/usr/bin/env bash
# Prints the path of a Python with the Kafka clients the Kafka-protocol tests drive:
# confluent-kafka (librdkafka 2.x), kafka-python 3.x and aiokafka, and DuckDB to read
# what they wrote straight from the bucket; installed into a
# virtualenv under target/ the first time. Pinned, so a test run is repeatable.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$root/target}/kafka-python-venv"
want="confluent-kafka==2.16.1 kafka-python==3.0.12 aiokafka==0.14.0 duckdb==2.0.1"
# Tests call this side by side: one installs while the others wait, so none runs a
# Python whose packages are half installed.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka, duckdb' >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
fi
echo "$venv/bin/python"
