#!/usr/bin/env bash
# Section 5 of BENCHMARKS.md: what kvmtune adds to a VM start through the real libvirtd.
#
#   KVMTUNE_BIN=target/release/kvmtune bench/libvirt.sh OUT.json [STARTS] [ROUNDS]
#
# tests/libvirt/lib.sh brings up libvirtd with kvmtune as its QEMU hook (and takes the host
# lock). A small TCG domain like scripts/demo.sh's (256 MiB on 2 MiB hugepages bound to node 0,
# its vCPU pinned to CPU 1 and isolated by kvmtune) is started STARTS times with `virsh start`
# (timed until it returns, the domain running) and stopped with `virsh destroy` (timed too);
# then libvirtd is restarted without the hook (libvirt finds hooks when it starts) and the same
# domain is started as often, its pages reserved beforehand as a host without a hook must; and
# back. ROUNDS times. The hook's own calls are timed from libvirtd's debug log.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/libvirt/lib.sh
source "$BENCH_REPO/tests/libvirt/lib.sh"

out=${1:?usage: bench/libvirt.sh OUT.json [STARTS] [ROUNDS]}
starts=${2:-5}
rounds=${3:-2}
bin=$(readlink -f "${KVMTUNE_BIN:?set KVMTUNE_BIN}")
vm=${LT_DOMAIN_PREFIX}bench-start
mib=256
xml=$(mktemp /tmp/kvmtune-bench-libvirt.XXXXXX.xml)

lt_setup "$bin"
trap 'lt_teardown; rm -f "$xml"' EXIT
lt_our_libvirtd >/dev/null || bench_die "libvirtd was already running: the arm without the hook needs one this run starts"
lt_domain_xml "$vm" 6b0c7a52-0000-4000-8000-0000000000b5 "$mib" hugepages \
  "<metadata><kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'><kvmtune:isolate cpus='vcpus'/></kvmtune:tune></metadata>" >"$xml"
lt_define "$vm" "$xml"

rows=()
# run_arm ARM: STARTS timed start/destroy pairs.
run_arm() {
  local arm=$1 i t0 t1 t2 from
  from=$(lt_debug_log_lines)
  for i in $(seq "$starts"); do
    t0=$(bench_now)
    virsh_ start "$vm" >/dev/null || bench_die "virsh start $vm failed ($arm)"
    t1=$(bench_now)
    [ "$(lt_domain_state "$vm")" = running ] || bench_die "$vm is not running after virsh start"
    virsh_ destroy "$vm" >/dev/null || bench_die "virsh destroy $vm failed"
    t2=$(bench_now)
    rows+=("{\"arm\": \"$arm\", \"start_ms\": $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}'), \"destroy_ms\": $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b - a}')}")
    bench_log "bench: libvirt: ${rows[-1]}"
  done
  if [ "$arm" = hook ]; then
    for op in "prepare begin" "start begin" "started begin" "release end"; do
      # shellcheck disable=SC2086 # op is two words on purpose
      hook_ms+=("{\"call\": \"$op\", \"ms\": [$(lt_hook_ms "$vm" $op "$from" | paste -sd,)]}")
    done
  fi
}

# Without the hook, the pages must be there before the VM starts (as at boot).
set_static_pool() { lt_set_pool 0 2048 "$1"; }

hook_ms=()
for _ in $(seq "$rounds"); do
  run_arm hook
  rm -f "$LT_HOOK"
  lt_restart_libvirtd || bench_die "cannot restart libvirtd without the hook"
  set_static_pool $((mib / 2))
  run_arm none
  set_static_pool 0
  ln -s "$LT_BIN_COPY" "$LT_HOOK"
  lt_restart_libvirtd || bench_die "cannot restart libvirtd with the hook"
done

{
  echo "{\"vm\": {\"memory_mib\": $mib, \"hugepages\": true, \"isolate\": \"1\", \"type\": \"qemu (TCG)\"},"
  echo " \"libvirt\": \"$(virsh -c "$LT_URI" version 2>/dev/null | awk '/Using library/{print $NF}')\","
  echo " \"runs\": ["
  printf '  %s' "${rows[0]}"
  for r in "${rows[@]:1}"; do printf ',\n  %s' "$r"; done
  echo "],"
  echo " \"hook_calls\": [$(IFS=,; echo "${hook_ms[*]}")]}"
} >"$out"
bench_log "bench: wrote $out"
