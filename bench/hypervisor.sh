#!/usr/bin/env bash
# Section 3b of BENCHMARKS.md in the Debian 13 hypervisor guest (tests/hypervisor): a real vCPU
# pinned to CPU 3 under host load, with no isolation, with confinement (isolation = "systemd")
# and with an isolated partition, side by side in one boot (bench/hypervisor/50-isolation.sh).
# Collects its "@@BENCH" lines.
#
#   KVMTUNE_BIN=target/release/kvmtune bench/hypervisor.sh OUT.json
#
# The guest is independent of the host (no lock); one boot under TCG, about 6 minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out=${1:?usage: bench/hypervisor.sh OUT.json}
: "${KVMTUNE_BIN:?set KVMTUNE_BIN}"
logs=$(mktemp -d /tmp/kvmtune-bench-hv.XXXXXX)
trap 'rm -rf "$logs"' EXIT
KVMTUNE_HV_SCENARIOS=$BENCH_DIR/hypervisor KVMTUNE_HV_VERBOSE=1 KVMTUNE_HV_LOGS=$logs \
  "$BENCH_REPO/tests/hypervisor/run.sh" >&2 || bench_die "the hypervisor guest run failed (see above)"
rows=$(sed -n 's/^| @@BENCH //p' "$logs/results.txt")
[ -n "$rows" ] || bench_die "the guest printed no @@BENCH line"
kernel=$(sed -n 's/^main: boot 1, kernel \([^,]*\),.*/\1/p' "$logs/results.txt" | head -1)
{
  echo "{\"where\": \"Debian 13 hypervisor guest (TCG)\", \"kernel\": \"$kernel\", \"rounds\": ["
  echo "$rows" | sed '$!s/$/,/' | sed 's/^/  /'
  echo "]}"
} >"$out"
bench_log "bench: wrote $out"
