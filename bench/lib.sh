# shellcheck shell=bash
# Shared by the real-host benchmarks (bench/isolation.sh, bench/hugepages.sh, bench/libvirt.sh).
#
# They change the real host (cpusets, hugepage pools, IRQs, libvirtd), so each takes the host
# lock the test tiers take (/run/lock/kvmtune-real-host.lock), restores what it changed, and
# stops only the processes it started, by PID.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_REPO=$(cd "$BENCH_DIR/.." && pwd)

bench_log() { printf '%s\n' "$*" >&2; }
bench_die() { bench_log "bench: $*"; exit 1; }

# Wait for, then hold, the host lock until this shell exits.
bench_lock() {
  exec {BENCH_LOCK_FD}>"${LT_HOST_LOCK:-/run/lock/kvmtune-real-host.lock}"
  bench_log "bench: waiting for the host lock"
  flock "$BENCH_LOCK_FD"
}

# Install Debian packages the benchmark needs when their command is missing: bench_need CMD:PKG…
bench_need() {
  local missing=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Compile bench/NAME.c into DIR/NAME (static, so its start-up is only exec).
bench_cc() {
  gcc -O2 -static -o "$2/$1" "$BENCH_DIR/$1.c" || bench_die "cannot compile bench/$1.c"
}

# Milliseconds since the epoch, with microseconds (no fork: bash's EPOCHREALTIME).
bench_now() { local t=${EPOCHREALTIME/[.,]/}; echo "$((t / 1000)).$(printf '%03d' $((t % 1000)))"; }

# A number for JSON: "null" when empty.
bench_num() { [ -n "${1:-}" ] && echo "$1" || echo null; }
