#!/usr/bin/env bash
# Long fault runs of the cluster tests, beyond what CI runs: kill -9 of the partition
# leader during acks=all produce, LEADER_KILLS times (default 100) in one cluster, each
# killed broker restarted and back in sync before the next kill; then the SIGSTOP test
# PAUSES times; then the network-partition test PARTITIONS times (two leaders cut off
# per run; needs root for network namespaces). A history checker judges every run;
# failover times are printed.
#
#   bash tests/chaos.sh            # 100 kills, 10 pauses, 10 partition runs
#   LEADER_KILLS=20 PAUSES=3 PARTITIONS=3 bash tests/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${LEADER_KILLS:-100}"
pauses="${PAUSES:-10}"
partitions="${PARTITIONS:-10}"
cargo build --tests --quiet
STRATA_LEADER_KILLS="$kills" cargo test --quiet --test e2e -- --nocapture \
  cluster::repeated_leader_kills_lose_no_acknowledged_record 2>&1 | grep -E "leader kills|test result|panicked|anomal"
for i in $(seq 1 "$pauses"); do
  cargo test --quiet --test e2e -- cluster::a_leader_paused 2>&1 | grep -E "test result|panicked|anomal"
done
for i in $(seq 1 "$partitions"); do
  cargo test --quiet --test e2e -- cluster::a_leader_cut_off 2>&1 | grep -E "test result|panicked|anomal"
done
