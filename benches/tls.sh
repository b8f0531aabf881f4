#!/usr/bin/env bash
# TLS overhead: `strata bench produce` then `strata bench consume` against a fresh
# release broker, once over plain text and once over TLS with client certificates
# (required), alternating, RUNS times each. Certificates are made with openssl in a temp
# dir. Arguments go to `bench produce`.
#   RUNS=2 benches/tls.sh --records 4000000 --record-size 100
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p strata
bin=target/release/strata
runs=${RUNS:-2}
pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n" >"$pki/ext.cnf"
for name in broker client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/$name.pem" -extfile "$pki/ext.cnf" 2>/dev/null
done
server_tls=(--tls-cert "$pki/broker.pem" --tls-key "$pki/broker.key" --tls-ca "$pki/ca.pem" --tls-client-auth required --super-user User:client)
client_tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/client.pem" --tls-key "$pki/client.key")

one() {
  local mode=$1; shift
  local dir port pid
  dir=$(mktemp -d)
  port=$((20000 + RANDOM % 20000))
  local s=() c=()
  if [ "$mode" = tls ]; then s=("${server_tls[@]}"); c=("${client_tls[@]}"); fi
  "$bin" server --data-dir "$dir" --listen "127.0.0.1:$port" --metrics-listen "" --kafka-listen "" \
    "${s[@]}" 2>"$dir/server.log" &
  pid=$!
  for _ in $(seq 100); do grep -q "server ready" "$dir/server.log" && break; sleep 0.1; done
  echo "== $mode"
  "$bin" bench produce --broker "localhost:$port" "${c[@]}" "$@"
  "$bin" bench consume --broker "localhost:$port" "${c[@]}"
  echo "broker CPU (user+sys ticks): $(awk '{print $14 + $15}' /proc/$pid/stat)"
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

echo "cores: $(nproc)"
for _ in $(seq "$runs"); do
  one plain "$@"
  one tls "$@"
done
