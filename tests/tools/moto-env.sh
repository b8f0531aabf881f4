#!/usr/bin/env bash
# Prints the path of a Python that has moto's S3 server, installing it into a virtualenv
# under target/ the first time. Used by the tests that need an S3 server whose
# conditional writes are atomic (tests/tools/moto-server.py serves one request at a
# time, so a conditional PUT's check and write cannot interleave with another's).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$root/target}/moto-venv"
mkdir -p "$(dirname "$venv")"
# Tests side by side install it once.
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import moto.s3, flask, flask_cors' >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    'moto[s3]==5.2.5' 'flask>=3,<4' 'flask-cors>=5,<7' >&2
fi
echo "$venv/bin/python"
