#!/usr/bin/env bash
# Cold-tier figures: replay from the hot tier, from the cold tier with an empty cache
# and with a warm cache; upload throughput; object-store GETs per GB replayed.
#   benches/tier.sh [RECORDS] [RECORD_SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
size=${2:-100}
cargo build --release -q -p strata
bin=target/release/strata
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
mport=$((port + 1))
cat > "$dir/strata.toml" <<TOML
data_dir = "$dir/data"
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
housekeeping_interval_ms = 200
cold_cache_memory_bytes = 536870912
cold_cache_disk_bytes = 1073741824
TOML
"$bin" server --config "$dir/strata.toml" 2>"$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "server ready" "$dir/server.log" && break; sleep 0.1; done
b="--broker 127.0.0.1:$port"
metric() { curl -s "127.0.0.1:$mport/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
echo "cores: $(nproc); $records records of $size bytes"
$bin topic create hot $b --partitions 1 --config remote.storage.enable=false >/dev/null
$bin topic create cold $b --partitions 1 --config segment.bytes=16777216 --config local.retention.bytes=1 >/dev/null
$bin bench produce $b --topic hot --records "$records" --record-size "$size" --partitions 1 | sed 's/^/produce hot:  /'
$bin bench produce $b --topic cold --records "$records" --record-size "$size" --partitions 1 | sed 's/^/produce cold: /'
# Wait for offload: only the active segment stays local.
for _ in $(seq 600); do
  lag=$("$bin" topic describe cold $b --output json | sed 's/.*"upload_lag":\([0-9]*\).*/\1/')
  [ "$lag" -lt $((16777216 / (size + 8))) ] && break; sleep 0.5
done
"$bin" topic describe cold $b --output json | sed 's/^/cold: /'
up_bytes=$(metric strata_tier_upload_bytes_total); up_secs=$(metric strata_tier_upload_seconds_sum)
echo "upload: $up_bytes Parquet bytes in $up_secs s of upload time"
$bin bench consume $b --topic hot | sed 's/^/replay hot:         /'
g0=$(metric strata_s3_get_requests_total)
$bin bench consume $b --topic cold | sed 's/^/replay cold, empty: /'
g1=$(metric strata_s3_get_requests_total); gb1=$(metric strata_tier_remote_read_bytes_total)
$bin bench consume $b --topic cold | sed 's/^/replay cold, warm:  /'
g2=$(metric strata_s3_get_requests_total)
echo "GETs: empty-cache replay $((g1 - g0)) for $gb1 batch bytes; warm replay $((g2 - g1))"
curl -s "127.0.0.1:$mport/metrics" | grep '^strata_cold_cache_requests_total'
