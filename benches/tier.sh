#!/usr/bin/env bash
# Cold-tier figures: replay from the hot tier, from the cold tier with an empty cache
# and with a warm cache; upload throughput and upload lag under sustained produce;
# object-store GETs per GB replayed; sustained produce with the foundation benchmark's
# settings (3 partitions), local disk use sampled, with the tier on and off.
#   benches/tier.sh [--payload repeat|random|json] [RECORDS] [RECORD_SIZE] [SUSTAINED_RECORDS] [BACKLOG_RECORDS]
# --payload goes to every `strata bench produce` here: `repeat` (the default) compresses
# about 100x in Parquet, `random` not at all, `json` as event text does.
set -euo pipefail
cd "$(dirname "$0")/.."
payload=repeat
if [ "${1:-}" = --payload ]; then payload=$2; shift 2; fi
records=${1:-6000000}
size=${2:-100}
sustained=${3:-60000000}
backlog=${4:-30000000}
cargo build --release -q -p strata
bin=target/release/strata
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
mport=$((port + 1))
# The memory cache holds the whole replay, so "warm" means every row group is cached.
cat > "$dir/strata.toml" <<TOML
data_dir = "$dir/data"
listen = "127.0.0.1:$port"
metrics_listen = "127.0.0.1:$mport"
housekeeping_interval_ms = 200
cold_cache_memory_bytes = 1073741824
cold_cache_disk_bytes = 2147483648
TOML
"$bin" server --config "$dir/strata.toml" 2>"$dir/server.log" &
pid=$!
sampler=
trap 'kill $pid $sampler 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "server ready" "$dir/server.log" && break; sleep 0.1; done
b="--broker 127.0.0.1:$port"
metric() { curl -s "127.0.0.1:$mport/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
field() { sed "s/.*\"$1\":\([0-9]*\).*/\1/"; }
# Sum of a numeric field over a topic's partitions.
total() { "$bin" topic describe "$1" $b --output json 2>/dev/null | grep -o "\"$2\":[0-9]*" | awk -F: '{ s += $2 } END { printf "%.0f\n", s }'; }
segment=67108864
echo "cores: $(nproc); $records records of $size bytes, $payload payload; cold segments of $segment bytes"
$bin topic create hot $b --partitions 1 --config remote.storage.enable=false >/dev/null
$bin topic create cold $b --partitions 1 --config segment.bytes=$segment --config local.retention.bytes=1 >/dev/null
$bin bench produce $b --payload "$payload" --topic hot --records "$records" --record-size "$size" --partitions 1 | sed 's/^/produce hot:  /'
# While the tiered topic takes sustained produce, sample how far offload trails it.
(while true; do "$bin" topic describe cold $b --output json 2>/dev/null | field upload_lag; sleep 0.25; done) >"$dir/lag" &
sampler=$!
$bin bench produce $b --payload "$payload" --topic cold --records "$records" --record-size "$size" --partitions 1 | sed 's/^/produce cold: /'
kill $sampler; wait $sampler 2>/dev/null || true; sampler=
echo "upload lag while producing: max $(sort -n "$dir/lag" | tail -1) records over $(wc -l <"$dir/lag") samples (one segment is ~$((segment / (size + 8))) records)"
# Wait for offload: only the active segment stays local.
for _ in $(seq 600); do
  lag=$("$bin" topic describe cold $b --output json | field upload_lag)
  [ "$lag" -lt $((segment / (size + 8))) ] && break; sleep 0.5
done
"$bin" topic describe cold $b --output json | sed 's/^/cold: /'
# The foundation benchmark's produce (10 M records, 3 partitions, tier off), for the rate
# offload has to keep up with on this machine now.
$bin topic create foundation $b --partitions 3 --config remote.storage.enable=false >/dev/null
$bin bench produce $b --payload "$payload" --topic foundation --records 10000000 --record-size "$size" | sed 's/^/foundation produce: /'
$bin topic delete foundation $b >/dev/null
# Offload on its own: a backlog written with the tier off, then the tier turned on.
$bin topic create backlog $b --partitions 1 --config segment.bytes=$segment --config local.retention.bytes=1 --config remote.storage.enable=false >/dev/null
$bin bench produce $b --payload "$payload" --topic backlog --records "$backlog" --record-size "$size" --partitions 1 >/dev/null
l0=$(metric strata_tier_upload_log_bytes_total); p0=$(metric strata_tier_upload_bytes_total)
t0=$(date +%s.%N)
$bin topic alter backlog $b --config remote.storage.enable=true >/dev/null
for _ in $(seq 1200); do
  lag=$("$bin" topic describe backlog $b --output json | field upload_lag)
  [ "$lag" -lt $((segment / (size + 8))) ] && break; sleep 0.1
done
t1=$(date +%s.%N)
l1=$(metric strata_tier_upload_log_bytes_total); p1=$(metric strata_tier_upload_bytes_total)
echo "offload of a backlog: $((l1 - l0)) log bytes as $((p1 - p0)) Parquet bytes ($(awk -v l="$((l1 - l0))" -v p="$((p1 - p0))" 'BEGIN { printf "%.3f", p / l }') of the log) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s: $(awk -v n="$((l1 - l0))" -v a="$t0" -v b="$t1" -v s="$size" 'BEGIN { printf "%.0f MB/s of log, %.2f M records/s", n / (b - a) / 1e6, n / (s + 8) / (b - a) / 1e6 }')"
$bin bench consume $b --topic hot | sed 's/^/replay hot:         /'
g0=$(metric strata_s3_get_requests_total); r0=$(metric strata_tier_remote_read_bytes_total)
$bin bench consume $b --topic cold | sed 's/^/replay cold, empty: /'
g1=$(metric strata_s3_get_requests_total); r1=$(metric strata_tier_remote_read_bytes_total)
$bin bench consume $b --topic cold | sed 's/^/replay cold, warm:  /'
g2=$(metric strata_s3_get_requests_total)
echo "GETs: empty-cache replay $((g1 - g0)) for $((r1 - r0)) batch bytes ($(awk -v g="$((g1 - g0))" -v r="$((r1 - r0))" 'BEGIN { printf "%.1f", g / (r / 1e9) }') per GB); warm replay $((g2 - g1))"
curl -s "127.0.0.1:$mport/metrics" | grep '^strata_cold_cache_requests_total'
# Sustained load: the foundation benchmark's produce (3 partitions) for far longer, local
# retention deleting whatever is offloaded. Segments of 256 MiB so each partition seals
# several; local disk use is sampled throughout (with the tier off it is everything).
for tier in true false; do
  t=sustained-$tier
  $bin topic create $t $b --partitions 3 --config segment.bytes=268435456 --config local.retention.bytes=1 --config remote.storage.enable=$tier >/dev/null
  (while true; do echo "$(total $t size_bytes) $(total $t upload_lag)"; sleep 0.25; done) >"$dir/disk" &
  sampler=$!
  $bin bench produce $b --payload "$payload" --topic $t --records "$sustained" --record-size "$size" | sed "s/^/sustained produce, tier $tier: /"
  kill $sampler; wait $sampler 2>/dev/null || true; sampler=
  echo "  local disk: max $(sort -n "$dir/disk" | tail -1 | awk '{ printf "%.0f MB", $1 / 1e6 }'), at the end $(tail -1 "$dir/disk" | awk '{ printf "%.0f MB", $1 / 1e6 }') of $(awk -v n="$sustained" -v s="$size" 'BEGIN { printf "%.0f MB", n * (s + 8) / 1e6 }') produced; upload lag max $(sort -n -k2 "$dir/disk" | tail -1 | awk '{ print $2 }') records ($(wc -l <"$dir/disk") samples)"
  $bin topic delete $t $b >/dev/null
done
curl -s "127.0.0.1:$mport/metrics" | grep -E '^strata_produce_throttle_seconds_(count|sum)'
