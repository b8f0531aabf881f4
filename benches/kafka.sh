#!/usr/bin/env bash
# The Kafka listener against gRPC on one fresh release broker, same run: `strata bench`
# (gRPC) and confluent-kafka (benches/kafka_clients.py, librdkafka) each produce RECORDS
# records of SIZE bytes over 3 partitions with acks=1 and read them back.
#   benches/kafka.sh 2000000 100
#   benches/kafka.sh 500000 1024
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
size=${2:-100}
cargo build --release -q -p strata
python=$(bash tests/tools/kafka-python-env.sh)
bin=target/release/strata
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
kport=$((port + 1))
"$bin" server --data-dir "$dir" --listen "127.0.0.1:$port" --kafka-listen "127.0.0.1:$kport" \
  --metrics-listen "" 2>"$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "server ready" "$dir/server.log" && break; sleep 0.1; done
echo "cores: $(nproc); $records records of $size bytes"
"$bin" bench produce --broker "127.0.0.1:$port" --records "$records" --record-size "$size"
"$bin" bench consume --broker "127.0.0.1:$port"
"$python" benches/kafka_clients.py "127.0.0.1:$kport" "$records" "$size"
echo "broker peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
