#!/usr/bin/env bash
# Section 2 of BENCHMARKS.md on this machine's real kernel: hugepage reservation on a
# fragmented host, by kvmtune, by the common script's method and by a plain write.
#
#   KVMTUNE_BIN=target/release/kvmtune bench/hugepages.sh OUT.json [ROUNDS]
#
# Each trial (bench/hugepages-trial.sh) fragments node 0 afresh with bench/fragment.c
# (anonymous memory, page cache from a sparse file, slab from files on /dev/shm; it touches up
# to 80 % of the node's free memory, at most 6 GiB, and keeps half), reserves 2 GiB of 2 MiB
# pages or 2 x 1 GiB pages with one method, and gives everything back. The script method drops
# the host's page cache (echo 3 > drop_caches), as those scripts do: nothing else the host
# needs is dropped. Takes the host lock; every pool gets its starting size back; only the
# processes started here are stopped, by PID.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out=${1:?usage: bench/hugepages.sh OUT.json [ROUNDS]}
rounds=${2:-2}
bin=$(readlink -f "${KVMTUNE_BIN:?set KVMTUNE_BIN}")
[ "$(id -u)" = 0 ] || bench_die "hugepages.sh needs root"
bench_need gcc:gcc

work=$(mktemp -d /tmp/kvmtune-bench-hp.XXXXXX)
tools=$work/tools
mkdir -p "$tools"
bench_cc fragment "$tools"
bench_cc msclock "$tools"
cache=/var/tmp/kvmtune-bench-cache.$$
export KVMTUNE_STATE_DIR=/run/kvmtune-bench-hp KVMTUNE_CONFIG=$work/absent.toml KVMTUNE_ROOT=/

bench_lock
declare -A pools_at_start=()
for f in /sys/devices/system/node/node*/hugepages/hugepages-*kB/nr_hugepages; do pools_at_start[$f]=$(cat "$f"); done
cleanup() {
  local f pid
  set +e
  pid=$(cat "$work/trial/frag.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
  for f in "${!pools_at_start[@]}"; do
    [ "$(cat "$f")" = "${pools_at_start[$f]}" ] || echo "${pools_at_start[$f]}" >"$f"
  done
  for f in "${!pools_at_start[@]}"; do
    [ "$(cat "$f")" = "${pools_at_start[$f]}" ] || bench_log "bench: could not restore $f to ${pools_at_start[$f]}"
  done
  rm -rf "$work" "$cache" "$KVMTUNE_STATE_DIR" /dev/shm/kvmtune-bench-slab.$$
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for f in "${!pools_at_start[@]}"; do
  [ "${pools_at_start[$f]}" = 0 ] || bench_die "$f holds ${pools_at_start[$f]} pages; the trials need empty pools"
done

truncate -s 8G "$cache"
free_mib=$(awk '/MemFree:/{print int($4 / 1024)}' /sys/devices/system/node/node0/meminfo)
frag_mib=$((free_mib * 8 / 10))
[ "$frag_mib" -le 6144 ] || frag_mib=6144
bench_log "bench: node 0 has $free_mib MiB free; each trial touches $frag_mib MiB"
mkdir -p "$work/trial"
rows=()
methods=(kvmtune script plain)
for r in $(seq "$rounds"); do
  for size in 2048:1024 1048576:2; do
    for i in 0 1 2; do
      m=${methods[$(((i + r) % 3))]}
      row=$(HP_METHOD=$m HP_NODE=0 HP_CPUS=$(cat /sys/devices/system/node/node0/cpulist) \
        HP_SIZE_KB=${size%:*} HP_PAGES=${size#*:} HP_FRAG_MIB=$frag_mib HP_CACHE=$cache \
        HP_TOOLS=$tools HP_KVMTUNE=$bin HP_WORK=$work/trial sh "$BENCH_DIR/hugepages-trial.sh") \
        || bench_die "trial $m ${size%:*} kB failed"
      bench_log "bench: hugepages: $row"
      rows+=("$row")
    done
  done
done
{
  echo "{\"where\": \"host\", \"nodes\": \"$(cat /sys/devices/system/node/online)\", \"mem_total_mib\": $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo), \"frag_mib\": $frag_mib, \"trials\": ["
  printf '  %s' "${rows[0]}"
  for r in "${rows[@]:1}"; do printf ',\n  %s' "$r"; done
  echo
  echo "]}"
} >"$out"
bench_log "bench: wrote $out"
