#!/usr/bin/env bash
# A three-broker Strata cluster and an S3-compatible store, on this machine.
#
#   deploy/cluster.sh up       build, start the store and brokers 1-3, wait until all are active
#   deploy/cluster.sh status   what broker 1 knows of the cluster
#   deploy/cluster.sh down     stop the brokers and the store (data is kept)
#   deploy/cluster.sh clean    down, then remove the data
#
# Brokers listen on 127.0.0.1:9391-9393 (metrics on :9491-9493, Kafka clients on
# :9591-9593); all three are
# controller voters and share the bucket `strata` (prefix `cluster`) of an s3s-fs
# server on 127.0.0.1:9390, which the script installs into its own directory with
# cargo the first time. Everything lives under $STRATA_CLUSTER_DIR (./strata-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${STRATA_CLUSTER_DIR:-$PWD/strata-cluster}"
bin="$PWD/target/release/strata"
s3="$dir/tools/bin/s3s-fs"
voters="1@127.0.0.1:9391,2@127.0.0.1:9392,3@127.0.0.1:9393"
export AWS_ENDPOINT=http://127.0.0.1:9390 AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=strata AWS_SECRET_ACCESS_KEY=strata-cluster-secret

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() { # name pidfile logfile command...
  local name=$1 pidfile=$2 log=$3
  shift 3
  if running "$pidfile"; then
    echo "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  "$@" >"$log" 2>&1 &
  echo $! >"$pidfile"
  echo "started $name (pid $!, log $log)"
}

stop() { # name pidfile
  if running "$2"; then
    local pid
    pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $1"
  fi
  rm -f "$2"
}

up() {
  mkdir -p "$dir/s3/strata" "$dir/run"
  cargo build --release -p strata
  if [ ! -x "$s3" ]; then
    echo "installing s3s-fs (an S3-compatible server) into $dir/tools"
    cargo install --quiet s3s-fs --version 0.14.1 --features binary --root "$dir/tools"
  fi
  start s3s-fs "$dir/run/s3.pid" "$dir/s3.log" \
    "$s3" --host 127.0.0.1 --port 9390 \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$dir/s3"
  for id in 1 2 3; do
    start "broker $id" "$dir/run/broker-$id.pid" "$dir/broker-$id.log" \
      "$bin" server --node-id "$id" --listen "127.0.0.1:939$id" \
      --metrics-listen "127.0.0.1:949$id" --kafka-listen "127.0.0.1:959$id" \
      --data-dir "$dir/broker-$id" \
      --voters "$voters" --object-store s3://strata/cluster
  done
  for _ in $(seq 1 120); do
    if "$bin" cluster status --broker 127.0.0.1:9391 --output json 2>/dev/null |
      grep -o '"state": *"active"' | wc -l | grep -q '^3$'; then
      "$bin" cluster status --broker 127.0.0.1:9391
      echo
      echo "cluster up: use --broker 127.0.0.1:9391 (or :9392, :9393), e.g."
      echo "  $bin topic create events --partitions 3 --replication-factor 3 --broker 127.0.0.1:9391"
      echo "Kafka clients: bootstrap.servers=127.0.0.1:9591,127.0.0.1:9592,127.0.0.1:9593"
      return
    fi
    sleep 0.5
  done
  echo "the brokers did not all become active within 60 s; see $dir/broker-*.log" >&2
  exit 1
}

down() {
  for id in 3 2 1; do stop "broker $id" "$dir/run/broker-$id.pid"; done
  stop s3s-fs "$dir/run/s3.pid"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) "$bin" cluster status --broker 127.0.0.1:9391 ;;
  clean) down; rm -rf "$dir/broker-1" "$dir/broker-2" "$dir/broker-3" "$dir/s3" "$dir/run" "$dir"/*.log ;;
  *) echo "usage: $0 up|status|down|clean" >&2; exit 2 ;;
esac
