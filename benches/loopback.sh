#!/usr/bin/env bash
# Runs `strata bench produce` then `strata bench consume` against a fresh release broker
# on loopback, then prints the broker's peak RSS. Arguments go to `bench produce`.
#   benches/loopback.sh --records 10000000 --record-size 100
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p strata
bin=target/release/strata
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$bin" server --data-dir "$dir" --listen "127.0.0.1:$port" --metrics-listen "" 2>"$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "server ready" "$dir/server.log" && break; sleep 0.1; done
echo "cores: $(nproc)"
"$bin" bench produce --broker "127.0.0.1:$port" "$@"
"$bin" bench consume --broker "127.0.0.1:$port"
echo "broker peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
