#!/usr/bin/env bash
# Prints a node_modules directory holding KafkaJS (from the npm registry), installing it
# under target/ the first time. Pinned, so a test run is repeatable.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${CARGO_TARGET_DIR:-$root/target}/kafkajs"
# Tests call this side by side: one installs while the others wait.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ ! -f "$dir/node_modules/kafkajs/package.json" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund --no-save kafkajs@2.2.4 >&2)
fi
echo "$dir/node_modules"
