#!/usr/bin/env bash
# Section 3 of BENCHMARKS.md: isolation effectiveness on the real kernel of this machine.
#
#   KVMTUNE_BIN=target/release/kvmtune bench/isolation.sh OUT.json [SECONDS] [ROUNDS]
#
# While stress-ng loads every CPU, a busy thread (bench/spin.c) pinned to CPU 1 stands in for a
# vCPU: it lives in its own cpuset, as libvirt puts a VM's threads in `machine/…`. Its share of
# CPU 1 ((utime + stime) / wall, from /proc/PID/stat; and run time from /proc/PID/schedstat) and
# its involuntary context switches per second (/proc/PID/status) are measured without isolation
# (the baseline) and with kvmtune isolating CPU 1 (its hook run on the real root for a domain
# whose vCPU is pinned to CPU 1 with <kvmtune:isolate cpus='vcpus'/>: prepare, then started,
# which also moves IRQs off CPU 1), alternating, ROUNDS times each.
#
# Also counted: interrupts delivered to CPU 1 and the block-I/O softirqs it runs (a managed IRQ,
# such as a virtio disk's queue, cannot be moved; the kernel refuses, kvmtune says so).
# Needs root and a cgroup v1 cpuset hierarchy (this project's machines). Takes the host lock;
# kvmtune's release and the test tier's isolation safety net put every cpuset, kernel thread,
# workqueue mask and IRQ back; only the processes started here are stopped, by PID.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/libvirt/lib.sh
source "$BENCH_REPO/tests/libvirt/lib.sh"

out=${1:?usage: bench/isolation.sh OUT.json [SECONDS] [ROUNDS]}
secs=${2:-10}
rounds=${3:-2}
bin=$(readlink -f "${KVMTUNE_BIN:?set KVMTUNE_BIN}")
[ "$(id -u)" = 0 ] || bench_die "isolation.sh needs root"
cpuset=/sys/fs/cgroup/cpuset
[ -f "$cpuset/cpuset.cpus" ] || bench_die "no cgroup v1 cpuset hierarchy at $cpuset"
[ "$(cat /sys/devices/system/cpu/online)" = 0-1 ] || bench_log "bench: expected CPUs 0-1; CPU 1 is isolated anyway"
bench_need stress-ng:stress-ng gcc:gcc

work=$(mktemp -d /tmp/kvmtune-bench-iso.XXXXXX)
bench_cc spin "$work"
vm=kvmtune-bench-iso
vm_cg=$cpuset/kvmtune-bench-vm
export KVMTUNE_STATE_DIR=/run/kvmtune-bench KVMTUNE_CONFIG=$work/absent.toml KVMTUNE_ROOT=/
xml="<domain type='kvm'><name>$vm</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<cputune><vcpupin vcpu='0' cpuset='1'/></cputune>
<metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:isolate cpus='vcpus'/></kvmtune:tune></metadata></domain>"

bench_lock
# The libvirt tier's safety net, pointed at this run: it knows what kvmtune's isolation
# touches and puts back whatever a failed release would leave.
LT_STATE_DIR=$KVMTUNE_STATE_DIR
LT_BIN_COPY=$bin
LT_DOMAINS=("$vm")
lt_isolation_record
ours=()   # PIDs started here
cleanup() {
  local p
  set +e
  for p in "${ours[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${ours[@]}"; do wait "$p" 2>/dev/null; done
  hook release end </dev/null
  lt_isolation_safety_net
  if [ -d "$vm_cg" ]; then
    while read -r p; do echo "$p" >"$cpuset/cgroup.procs"; done <"$vm_cg/cgroup.procs"
    rmdir "$vm_cg"
  fi
  rm -rf "$work" "$KVMTUNE_STATE_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hook() { printf '%s' "$xml" | "$bin" hook "$vm" "$1" "$2" - ; }

# The "VM" cpuset: CPU 1 only, outside the root cpuset whose tasks kvmtune confines.
mkdir -p "$vm_cg"
cat "$cpuset/cpuset.mems" >"$vm_cg/cpuset.mems"
echo 1 >"$vm_cg/cpuset.cpus"

clk=$(getconf CLK_TCK)
# utime+stime (ticks), run time (ns), involuntary and voluntary switches of PID.
sample() {
  local stat rest
  read -r stat <"/proc/$1/stat"
  rest=${stat##*) }
  read -ra f <<<"$rest"
  echo "$((f[11] + f[12])) $(cut -d' ' -f1 "/proc/$1/schedstat") \
$(awk '/^nonvoluntary_ctxt_switches/{n=$2} /^voluntary_ctxt_switches/{v=$2} END{print n, v}' "/proc/$1/status")"
}

# Interrupts delivered to CPU 1 (every IRQ's count in its column of /proc/interrupts) and the
# block-I/O softirqs run there: what still reaches an isolated CPU.
cpu1_irqs() {
  awk 'NR > 1 && $1 ~ /^[0-9]+:$/ { s += $3 } END { print s + 0 }' /proc/interrupts
}
cpu1_block() { awk '$1 == "BLOCK:" { print $3 }' /proc/softirqs; }

# True when stress-ng PID has its nproc CPU workers (its children).
stress_workers_up() { [ "$(pgrep -c -P "$1")" -ge "$(nproc)" ]; }
# True when process PID runs the program NAME (its comm).
runs_program() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

rows=()
round() {
  local arm=$1 stress spin a b t0 t1 workers
  stress-ng --cpu "$(nproc)" --timeout "$((secs + 15))s" --quiet &
  stress=$!
  ours+=("$stress")
  # The host is loaded once every worker runs (they are what isolation must move off CPU 1).
  lt_wait_until 30 stress_workers_up "$stress" || bench_die "stress-ng (pid $stress) did not start its $(nproc) workers within 30 s"
  if [ "$arm" = isolated ]; then
    hook prepare begin || bench_die "kvmtune prepare failed"
    hook started begin || bench_die "kvmtune started failed"
  fi
  # The busy thread, born in the VM cpuset.
  (echo "$BASHPID" >"$vm_cg/cgroup.procs" && exec "$work/spin" 1 "$((secs + 3))") &
  spin=$!
  ours+=("$spin")
  # Measured from when it runs its own program (before the exec it is this script's subshell).
  lt_wait_until 30 runs_program "$spin" spin || bench_die "the busy thread (pid $spin) was not running bench/spin within 30 s"
  workers=$(for p in $(pgrep -P "$stress"); do awk '/^Cpus_allowed_list/{print $2}' "/proc/$p/status"; done | sort -u | paste -sd' ')
  a="$(sample "$spin") $(cpu1_irqs) $(cpu1_block)"
  t0=$(bench_now)
  sleep "$secs"
  b="$(sample "$spin") $(cpu1_irqs) $(cpu1_block)"
  t1=$(bench_now)
  wait "$spin" || true
  kill "$stress" 2>/dev/null || true
  wait "$stress" 2>/dev/null || true
  ours=()
  if [ "$arm" = isolated ]; then hook release end; fi
  rows+=("$(awk -v arm="$arm" -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v clk="$clk" -v w="$workers" 'BEGIN {
    split(a, x, " "); split(b, y, " "); s = (t1 - t0) / 1000
    printf "{\"arm\": \"%s\", \"seconds\": %.3f, \"share_stat\": %.4f, \"share_schedstat\": %.5f, \"involuntary_per_s\": %.3f, \"voluntary_per_s\": %.3f, \"cpu1_irqs_per_s\": %.1f, \"cpu1_block_softirqs_per_s\": %.1f, \"stress_workers_cpus\": \"%s\"}",
      arm, s, (y[1] - x[1]) / clk / s, (y[2] - x[2]) / 1e9 / s, (y[3] - x[3]) / s, (y[4] - x[4]) / s, (y[5] - x[5]) / s, (y[6] - x[6]) / s, w }')")
  bench_log "bench: isolation $arm: ${rows[-1]}"
}

for _ in $(seq "$rounds"); do
  round baseline
  round isolated
done

{
  echo "{\"cpus\": \"$(cat /sys/devices/system/cpu/online)\", \"isolated_cpu\": 1, \"stress\": \"stress-ng --cpu $(nproc)\","
  echo " \"rounds\": ["
  printf '  %s' "${rows[0]}"
  for r in "${rows[@]:1}"; do printf ',\n  %s' "$r"; done
  echo
  echo " ]}"
} >"$out"
bench_log "bench: wrote $out"
