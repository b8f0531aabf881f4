#!/usr/bin/env bash
# Prints the path of Debian's kcat (librdkafka 2.0.2: the old-client probe), installing
# the package the first time. Used by the Kafka-protocol tests.
set -euo pipefail
# Tests call this side by side: one installs while the others wait (apt takes one at a time).
exec 9>"${TMPDIR:-/tmp}/strata-kcat-install.lock"
flock 9
if ! command -v kcat >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get install -y -q kcat >&2 || { $sudo_ apt-get update -q >&2 && $sudo_ apt-get install -y -q kcat >&2; }
fi
command -v kcat
