#!/usr/bin/env bash
# Start-up time and memory of one broker with many idle partitions.
#
# Generates a file:// bucket holding TOPICS x PARTITIONS partitions whose manifests list
# SEGMENTS remote segments each (by default 100 x 100 x 10: 10,000 partitions, 100,000
# remote segments), written straight in the documented format (docs/cold-tier.md), then
# measures, RUNS times each:
#   empty  a broker on an empty data directory against that bucket (every topic rebuilt
#          from the bucket);
#   clean  a restart on the data directory the first start made, after a clean shutdown
#          (SIGTERM);
#   crash  a restart after kill -9.
# Then, without cold data: the same number of topics and partitions created through
# `strata topic create` on a fresh broker and an empty bucket (nothing produced), and its
# restart after a clean shutdown.
#
# For each start: seconds from launching the process to the `strata server ready` log
# line (and to `opened the partition logs`, the end of the local part), the CPU seconds
# the broker used by then (the rest is waiting, mostly on fsync), the object-store
# requests made by then (read just after ready, when the first offload round has begun
# listing partitions), and, once it has been idle for SETTLE seconds, resident memory
# (VmRSS, of it RssAnon), the peak (VmHWM), threads, open files and the CPU it burns
# idle (measured over IDLE seconds).
#
#   benches/startup.sh [TOPICS] [PARTITIONS] [SEGMENTS] [RECORDS_PER_SEGMENT] [ROWS_PER_GROUP] [RUNS]
#
# The defaults describe what the broker writes with its default `segment.bytes` (1 GiB):
# 1,000,000 records of about 1 KiB per segment, row groups of at most 4 MiB of keys and
# values (4096 such records), so 245 row groups per segment; a manifest lists the first
# offset of every row group and its CRC-32. The Parquet objects themselves are zero-byte
# placeholders (the CRCs and footer lengths are made up; nothing here checks them):
# start-up reads `_topic.json` and `_manifest.json` only (and, on a file:// store, walks
# the bucket's directories for abandoned multipart uploads; the placeholders make that
# walk and the first offload round's listing of each partition as long as they would be).
# Nothing here reads a segment; the GET count printed for each start shows it.
#
# Environment: SETTLE (default 30) seconds idle before memory is read; IDLE (default 20)
# seconds over which idle CPU is measured; KEEP=1 keeps the temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."
topics=${1:-100}
partitions=${2:-100}
segments=${3:-10}
records=${4:-1000000}
rows_per_group=${5:-4096}
runs=${6:-3}
settle_s=${SETTLE:-30}
idle_s=${IDLE:-20}
nice -n 19 cargo build --release -q -p strata
bin=$PWD/target/release/strata
dir=$(mktemp -d /tmp/strata-startup.XXXXXX)
port=$((20000 + RANDOM % 20000))
mport=$((port + 1))
b="--broker 127.0.0.1:$port"
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# --- The bucket -----------------------------------------------------------------------
# One `_topic.json` per topic (the broker's TopicMeta), one `_manifest.json` per partition
# (version 2, segments contiguous from offset 0, timestamps within the last hours so the
# default 7-day retention keeps them), one placeholder per listed object.
gen_start=$(date +%s.%N)
python3 - "$dir/bucket" "$topics" "$partitions" "$segments" "$records" "$rows_per_group" <<'PY'
import base64, json, os, random, sys, time, zlib
root, topics, partitions, segments, records, rows = sys.argv[1], *map(int, sys.argv[2:])
rng = random.Random(42)
now = int(time.time() * 1000)
span = 3_600_000  # each segment covers an hour, the newest ending now
for t in range(topics):
    name = f"t{t:04}"
    tid = base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()
    tdir = os.path.join(root, "topics", name, f"topic_id={tid}")
    os.makedirs(tdir)
    meta = {"name": name, "id": tid, "partitions": partitions, "replication_factor": 1,
            "configs": {}, "created_ms": now - segments * span}
    with open(os.path.join(tdir, "_topic.json"), "w") as f:
        json.dump(meta, f, indent=2)
    for p in range(partitions):
        pdir = os.path.join(tdir, f"partition={p}")
        os.makedirs(pdir)
        segs = []
        for s in range(segments):
            base, last = s * records, (s + 1) * records - 1
            key = f"topics/{name}/topic_id={tid}/partition={p}/{base:020}-{last:020}.parquet"
            open(os.path.join(root, key), "w").close()
            end_ms = now - (segments - 1 - s) * span
            groups = list(range(base, last + 1, rows))
            segs.append({
                "base_offset": base, "last_offset": last, "records": records,
                "min_timestamp": end_ms - span + 1, "max_timestamp": end_ms,
                "size_bytes": records * 1000, "key": key,
                "row_groups": groups,
                "crc32": zlib.crc32(key.encode()),
                # As an upload records them: the footer's length and CRC, a CRC per row group.
                "footer": {"len": 4096 + 64 * len(groups), "crc32": rng.getrandbits(32)},
                "row_group_crc32": [rng.getrandbits(32) for _ in groups],
            })
        manifest = {"version": 2, "topic": name, "topic_id": tid, "partition": p,
                    "segments": segs, "end_offset": segments * records}
        # Pretty-printed, as the broker writes it (serde_json::to_vec_pretty).
        with open(os.path.join(pdir, "_manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
PY
gen_end=$(date +%s.%N)
echo "cores: $(nproc); $topics topics x $partitions partitions, $segments remote segments each ($((topics * partitions * segments)) in all), $records records and $(( (records + rows_per_group - 1) / rows_per_group )) row groups per segment"
echo "bucket generated in $(awk -v a="$gen_start" -v b="$gen_end" 'BEGIN { printf "%.1f", b - a }') s: $(find "$dir/bucket" -name _manifest.json | wc -l) manifests, $(du -sb "$dir/bucket" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# --- Measuring one start --------------------------------------------------------------
# Seconds since the epoch of a log line's RFC 3339 timestamp (the first field).
line_time() { date -d "$(grep -m1 "$1" "$2" | awk '{ print $1 }')" +%s.%N; }
metric() { curl -s "127.0.0.1:$mport/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
status() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }

# start LABEL DATA_DIR BUCKET: starts a broker and waits for it to be ready; prints the
# seconds that took and the object-store requests made by then. Leaves it running ($pid).
start() {
  local label=$1 data=$2 bucket=$3 log t0
  log="$dir/$label.$(date +%s%N).log"
  : >"$log"
  t0=$(date +%s.%N)
  "$bin" server --data-dir "$data" --object-store "file://$bucket" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" 2>"$log" &
  pid=$!
  while ! grep -q "strata server ready" "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "the broker exited:"; tail -20 "$log"; exit 1; fi
    sleep 0.05
  done
  local cpu
  cpu=$(cpu_ticks)
  printf '%-6s ready %6.2f s (partition logs opened at %6.2f s), %5.2f s of CPU; by then %s GETs, %s LISTs; peak RSS %d MB\n' \
    "$label" "$(awk -v a="$t0" -v b="$(line_time "strata server ready" "$log")" 'BEGIN { print b - a }')" \
    "$(awk -v a="$t0" -v b="$(line_time "opened the partition logs" "$log")" 'BEGIN { print b - a }')" \
    "$(awk -v t="$cpu" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')" \
    "$(metric strata_s3_get_requests_total)" "$(metric strata_s3_list_requests_total)" $(($(status VmHWM) / 1024))
}

# idle: waits SETTLE seconds (the first offload round lists every partition's objects),
# then prints memory, threads, open files, and the CPU used over the next IDLE seconds.
idle() {
  local c0 c1
  sleep "$settle_s"
  c0=$(cpu_ticks)
  sleep "$idle_s"
  c1=$(cpu_ticks)
  printf '       idle: RSS %d MB (anon %d MB), peak %d MB; %s threads, %s open files; CPU %.1f%% of one core; %s LISTs so far\n' \
    $(($(status VmRSS) / 1024)) $(($(status RssAnon) / 1024)) $(($(status VmHWM) / 1024)) \
    "$(status Threads)" "$(ls "/proc/$pid/fd" | wc -l)" \
    "$(awk -v t="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v s="$idle_s" 'BEGIN { print 100 * t / hz / s }')" \
    "$(metric strata_s3_list_requests_total)"
}

# stop: SIGTERM (a clean shutdown, which writes `.clean-shutdown`) and wait for the exit.
stop() {
  local t0 t1
  t0=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true; pid=
  t1=$(date +%s.%N)
  echo "       clean shutdown took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
}

# crash: kill -9, as a power cut would leave the process (the page cache survives).
crash() { kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# --- 10,000 partitions with cold data, rebuilt from the bucket ------------------------
for run in $(seq "$runs"); do
  echo "run $run (load average $(cut -d" " -f1-3 /proc/loadavg)):"
  data="$dir/data-$run"
  start empty "$data" "$dir/bucket"; idle; stop
  start clean "$data" "$dir/bucket"; idle; crash
  start crash "$data" "$dir/bucket"; idle; stop
  rm -rf "$data"
done

# --- 10,000 idle partitions, no cold data ---------------------------------------------
for run in $(seq "$runs"); do
  echo "run $run, no cold data (load average $(cut -d" " -f1-3 /proc/loadavg)):"
  data="$dir/plain-$run"
  mkdir -p "$dir/plain-bucket-$run"
  start new "$data" "$dir/plain-bucket-$run"
  t0=$(date +%s.%N)
  for t in $(seq 0 $((topics - 1))); do
    "$bin" topic create "$(printf 't%04d' "$t")" $b --partitions "$partitions" >/dev/null
  done
  t1=$(date +%s.%N)
  echo "       created $topics topics of $partitions partitions in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
  idle; stop
  start clean "$data" "$dir/plain-bucket-$run"; idle; stop
  rm -rf "$data" "$dir/plain-bucket-$run"
done
