#!/usr/bin/env bash
# kvmtune in two minutes, on a fresh Debian 12 machine (root):
#
#   scripts/demo.sh
#
# Installs libvirt and QEMU, builds kvmtune, starts libvirtd with kvmtune as its QEMU hook,
# starts a small hugepage-backed VM bound to NUMA node 0, and shows node 0's hugepage pools
# before, during and after. Everything it starts or installs is removed when it ends.
# Set KVMTUNE_BIN to use an already built binary.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tests/libvirt/lib.sh
source "$repo/tests/libvirt/lib.sh"

VM=${LT_DOMAIN_PREFIX}demo
VM_UUID=6b0c7a52-0000-4000-8000-0000000000de
VM_MIB=256

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
heading() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$plain"; }
indent() { sed 's/^/    /'; }
size_name() { [ "$1" -ge 1048576 ] && echo "$(($1 / 1048576)) GiB" || echo "$(($1 / 1024)) MiB"; }

show_pools() {
  local d kb
  printf '  %-8s %7s %7s %8s\n' "page" "total" "free" "surplus"
  for d in /sys/devices/system/node/node0/hugepages/hugepages-*kB; do
    kb=${d##*hugepages-}
    kb=${kb%kB}
    printf '  %-8s %7s %7s %8s\n' "$(size_name "$kb")" "$(cat "$d/nr_hugepages")" \
      "$(cat "$d/free_hugepages")" "$(cat "$d/surplus_hugepages")"
  done
}

[ "$(id -u)" = 0 ] || { echo "demo.sh: run it as root (it starts libvirtd and resizes hugepage pools)" >&2; exit 1; }

heading "1/6 Packages (libvirt, QEMU)"
"$repo/tests/deps.sh"

heading "2/6 Building kvmtune"
if [ -z "${KVMTUNE_BIN:-}" ]; then
  command -v cargo >/dev/null || { echo "demo.sh: needs Rust's cargo (https://rustup.rs), or KVMTUNE_BIN" >&2; exit 1; }
  echo "  cargo build --release"
  (cd "$repo" && cargo build --release --quiet)
  KVMTUNE_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/kvmtune
fi
KVMTUNE_BIN=$(readlink -f "$KVMTUNE_BIN")
echo "  using $KVMTUNE_BIN"

heading "3/6 libvirtd with kvmtune as its QEMU hook"
LT_SKIP_DEPS=1 lt_setup "$KVMTUNE_BIN"
echo "  hook:     $LT_HOOK -> $(readlink -f "$LT_HOOK")"
echo "  libvirtd: libvirt $(virsh -c "$LT_URI" version 2>/dev/null | awk '/Using library/{print $NF}'), QEMU $(virsh -c "$LT_URI" version 2>/dev/null | awk '/Running hypervisor/{print $NF}')" \
  "$( [ ${#LT_STARTED_PIDS[@]} -gt 0 ] && echo "(started for this demo, logs in $LT_LOG_DIR)" || echo "(already running, reused)")"

heading "4/6 The VM: $VM_MIB MiB on hugepages, memory bound to node 0, vCPU pinned to CPU 1"
xml=$(mktemp /tmp/kvmtune-demo.XXXXXX.xml)
trap 'lt_teardown; rm -f "$xml"' EXIT
lt_domain_xml "$VM" "$VM_UUID" "$VM_MIB" hugepages >"$xml"
lt_define "$VM" "$xml"
echo "  defined $VM (type='qemu', no disk: it sits in its firmware, which is all we need)"
echo
echo "  node 0 hugepage pools before:"
show_pools
lt_pools_snapshot >"$xml.before"

echo
echo "  virsh start $VM"
if ! out=$(virsh_ start "$VM" 2>&1); then
  echo "  the VM did not start:"
  indent <<<"$out"
  calls=$(lt_hook_calls "$VM")
  [ -z "$calls" ] || echo "  libvirt called kvmtune for: $calls"
  exit 1
fi

heading "5/6 While it runs"
echo "  state: $(lt_domain_state "$VM")"
echo "  node 0 hugepage pools:"
show_pools
echo
echo "  kvmtune status:"
status_rc=0
status_out=$("$KVMTUNE_BIN" status 2>&1) || status_rc=$?
indent <<<"$status_out"
[ "$status_rc" = 0 ] || echo "    (kvmtune status exited $status_rc)"

heading "6/6 After virsh destroy"
virsh_ destroy "$VM" >/dev/null
show_pools
lt_pools_snapshot >"$xml.after"
calls=$(lt_hook_calls "$VM")
[ -z "$calls" ] || echo "  libvirt called kvmtune for: $calls"
echo
if cmp -s "$xml.before" "$xml.after"; then
  echo "Verdict: every hugepage pool was restored exactly."
  verdict=0
else
  echo "Verdict: NOT restored: $(join <(sort "$xml.before") <(sort "$xml.after") \
    | awk '$2 != $3 {printf "%s%s was %s, now %s", sep, $1, $2, $3; sep = "; "}')"
  verdict=1
fi
rm -f "$xml.before" "$xml.after"
echo "(cleaning up: the VM, the hook, and the daemons this demo started)"
exit "$verdict"
