#!/usr/bin/env bash
# Section 2 of BENCHMARKS.md in the test guest: boots tests/guest's 2- and 3-node 6.1 kernels
# under QEMU/TCG with the benchmark's scenarios (bench/guest/) and tools, and collects their
# "@@BENCH" lines.
#
#   KVMTUNE_BIN=target/release/kvmtune bench/guest.sh OUT.json
#
# The guest is independent of the host (no lock); it takes several minutes under TCG.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out=${1:?usage: bench/guest.sh OUT.json}
: "${KVMTUNE_BIN:?set KVMTUNE_BIN}"
bench_need gcc:gcc
work=$(mktemp -d /tmp/kvmtune-bench-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/files" "$work/logs"
bench_cc fragment "$work/files"
bench_cc msclock "$work/files"
cp "$BENCH_DIR/hugepages-trial.sh" "$work/files/"
KVMTUNE_GUEST_SCENARIOS=$BENCH_DIR/guest KVMTUNE_GUEST_FILES=$work/files \
  KVMTUNE_GUEST_SCENARIO_TIMEOUT=${BENCH_GUEST_SCENARIO_TIMEOUT:-1500} \
  KVMTUNE_GUEST_TIMEOUT=${BENCH_GUEST_TIMEOUT:-1800} KVMTUNE_GUEST_VERBOSE=1 \
  KVMTUNE_GUEST_LOGS=$work/logs KVMTUNE_GUEST_TOPOS=${BENCH_GUEST_TOPOS:-2node 3node} \
  "$BENCH_REPO/tests/guest/run.sh" >&2 || bench_die "the guest run failed (see above)"
rows=$(cat "$work"/logs/console-*.log | sed -n 's/^@@LOG [^|]*| @@BENCH //p')
[ -n "$rows" ] || bench_die "the guest printed no @@BENCH line"
{
  echo "{\"where\": \"guest\", \"kernel\": \"$(sed -n 's/.*kernel=\([^ ]*\).*/\1/p' "$work"/logs/console-*.log | head -1)\", \"trials\": ["
  echo "$rows" | sed '$!s/$/,/' | sed 's/^/  /'
  echo "]}"
} >"$out"
bench_log "bench: wrote $out"
