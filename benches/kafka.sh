#!/usr/bin/env bash
# The Kafka listener against gRPC on one fresh release broker, same run: `strata bench`
# (gRPC, then the same load generator over Kafka with --kafka), kcat (librdkafka in C)
# and confluent-kafka
# (benches/kafka_clients.py, librdkafka under Python) each produce RECORDS records of
# SIZE bytes over 3 partitions with acks=1 and read them back.
#   benches/kafka.sh 2000000 100
#   benches/kafka.sh 500000 1024
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
size=${2:-100}
cargo build --release -q -p strata
python=$(bash tests/tools/kafka-python-env.sh)
kcat=$(bash tests/tools/kcat.sh)
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
# The broker's CPU time (user + system, ms) so far: each phase reports what it cost the
# broker per record, which does not depend on how fast the client is.
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{ print ($14 + $15) * 1000 / hz }' "/proc/$pid/stat"; }
phase() { # name, then the command
  local name=$1 before after
  shift
  before=$(cpu_ms)
  "$@"
  after=$(cpu_ms)
  awk -v n="$records" -v a="$before" -v b="$after" -v name="$name" \
    'BEGIN { printf "  broker CPU for %s: %.0f ms, %.2f us/record\n", name, b - a, (b - a) * 1000 / n }'
}
phase "gRPC produce" "$bin" bench produce --broker "127.0.0.1:$port" --records "$records" --record-size "$size"
phase "gRPC consume" "$bin" bench consume --broker "127.0.0.1:$port"
# The same load generator over the Kafka listener: the same batches, partitioning and
# pipelining, as Produce and Fetch requests (1 MiB per fetch, Kafka's
# max.partition.fetch.bytes).
phase "Kafka produce (strata bench)" "$bin" bench produce --kafka "127.0.0.1:$kport" \
  --topic strata-bench-kafka --records "$records" --record-size "$size"
phase "Kafka consume (strata bench)" "$bin" bench consume --kafka "127.0.0.1:$kport" \
  --topic strata-bench-kafka --fetch-size 1048576
# kcat: one line per record from a file made beforehand (not timed).
"$bin" topic create kcat-bench --partitions 3 --broker "127.0.0.1:$port" >/dev/null
value=$(head -c "$size" /dev/zero | tr '\0' x)
awk -v n="$records" -v v="$value" 'BEGIN { for (i = 0; i < n; i++) print v }' >"$dir/records.txt"
rdk=(-X linger.ms=5 -X batch.size=262144 -X queue.buffering.max.messages=1000000
  -X queue.buffering.max.kbytes=1048576 -X acks=1)
timed() { # name, then the command: records/s and MB/s of the command's wall time
  local name=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v n="$records" -v s="$size" -v a="$t0" -v b="$t1" -v name="$name" 'BEGIN {
    printf "%s: %.0f records/s, %.1f MB/s (%d records in %.2f s)\n", name, n / (b - a), n * s / (b - a) / 1e6, n, b - a }'
}
phase "kcat produce" timed "kcat produce" \
  "$kcat" -P -b "127.0.0.1:$kport" -t kcat-bench "${rdk[@]}" -l "$dir/records.txt"
phase "kcat consume" timed "kcat consume" \
  sh -c '"$0" -C -b "$1" -t kcat-bench -o beginning -e -q -c "$2" -X fetch.max.bytes=4194304 >/dev/null' \
  "$kcat" "127.0.0.1:$kport" "$records"
rm -f "$dir/records.txt"
phase "confluent-kafka produce and consume" \
  "$python" benches/kafka_clients.py "127.0.0.1:$kport" "$records" "$size"
echo "broker peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
