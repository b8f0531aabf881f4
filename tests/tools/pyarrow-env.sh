#!/usr/bin/env bash
# Prints the path of a Python that has pyarrow, installing it into a virtualenv under
# target/ the first time. Used by the tests that read our Parquet with a reader we did
# not write.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$root/target}/pyarrow-venv"
if ! "$venv/bin/python" -c 'import pyarrow' >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'pyarrow>=15' >&2
fi
echo "$venv/bin/python"
