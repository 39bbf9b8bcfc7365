#!/usr/bin/env bash
# kvmtune in two minutes, on a fresh Debian 12 machine (root):
#
#   scripts/demo.sh
#
# Installs libvirt and QEMU, builds kvmtune, starts libvirtd with kvmtune as its QEMU hook,
# starts a small hugepage-backed VM bound to NUMA node 0 with its vCPU pinned to CPU 1 and
# isolated, and shows node 0's hugepage pools and which host processes may use CPU 1, before,
# during and after. Everything it starts or installs is removed when it ends.
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

# Does the CPU list $1 (kernel syntax, e.g. 0-1,3) contain CPU $2?
in_list() {
  local item lo hi
  for item in ${1//,/ }; do
    lo=${item%-*} hi=${item#*-}
    [ "$2" -ge "$lo" ] && [ "$2" -le "$hi" ] && return 0
  done
  return 1
}

# One line per user process (kernel threads have an empty cmdline): PID NAME ALLOWED-CPUS.
cpu_snapshot() {
  local p cpus
  for p in /proc/[0-9]*; do
    [ -n "$(tr -d '\0' <"$p/cmdline" 2>/dev/null)" ] || continue
    cpus=$(awk '/^Cpus_allowed_list:/{print $2}' "$p/status" 2>/dev/null) || continue
    [ -n "$cpus" ] && echo "${p#/proc/} $(cat "$p/comm" 2>/dev/null | tr ' ' _) $cpus"
  done
}

# How many host processes may run on CPU $2 in snapshot $1, QEMU and libvirtd aside.
on_cpu() {
  local n=0 pid comm cpus
  while read -r pid comm cpus; do
    case "$comm" in qemu-system-*|libvirtd) continue ;; esac
    in_list "$cpus" "$2" && n=$((n + 1))
  done <"$1"
  echo "$n"
}

[ "$(id -u)" = 0 ] || { echo "demo.sh: run it as root (it starts libvirtd and resizes hugepage pools)" >&2; exit 1; }

heading "1/6 Packages (libvirt, QEMU)"
"$repo/tests/deps.sh" --libvirt

heading "2/6 Building kvmtune"
if [ -z "${KVMTUNE_BIN:-}" ] && ! command -v cargo >/dev/null && [ -x /usr/sbin/kvmtune ]; then
  KVMTUNE_BIN=/usr/sbin/kvmtune   # no toolchain here, but the package is installed: show it
fi
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
if [ ${#LT_STARTED_PIDS[@]} -gt 0 ]; then
  whose="(started for this demo, logs in $LT_LOG_DIR)"
elif [ -n "$LT_SYSTEMD_UNIT" ]; then
  whose="(already running, reused: systemd's $LT_SYSTEMD_UNIT, left running)"
else
  whose="(already running, reused)"
fi
echo "  libvirtd: libvirt $(virsh -c "$LT_URI" version 2>/dev/null | awk '/Using library/{print $NF}'), QEMU $(virsh -c "$LT_URI" version 2>/dev/null | awk '/Running hypervisor/{print $NF}') $whose"

heading "4/6 The VM: $VM_MIB MiB on hugepages, memory bound to node 0, vCPU pinned to CPU 1 and isolated"
xml=$(mktemp /tmp/kvmtune-demo.XXXXXX.xml)
trap 'lt_teardown; rm -f "$xml" "$xml".*' EXIT
lt_domain_xml "$VM" "$VM_UUID" "$VM_MIB" hugepages >"$xml"
lt_define "$VM" "$xml"
virsh_ metadata "$VM" --uri urn:kvmtune:1 --key kvmtune --config \
  --set '<tune><isolate cpus="vcpus"/></tune>' >/dev/null
echo "  defined $VM (type='qemu', no disk: it sits in its firmware, which is all we need)"
echo "  its metadata asks kvmtune to isolate its vCPU's CPU: <kvmtune:isolate cpus=\"vcpus\"/>"
echo
echo "  node 0 hugepage pools before:"
show_pools
lt_pools_snapshot >"$xml.before"
cpu_snapshot >"$xml.cpus-before"
echo "  host processes that may run on CPU 1: $(on_cpu "$xml.cpus-before" 1)"

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
cpu_snapshot >"$xml.cpus-running"
echo "  host processes that may run on CPU 1: $(on_cpu "$xml.cpus-running" 1) (libvirtd aside: on cgroupfs hosts it stays free to place new VMs)"
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
cpu_snapshot >"$xml.cpus-after"
echo "  host processes that may run on CPU 1: $(on_cpu "$xml.cpus-after" 1)"
calls=$(lt_hook_calls "$VM")
[ -z "$calls" ] || echo "  libvirt called kvmtune for: $calls"
echo
# Processes present before and after must have their CPUs back exactly.
cpus_changed=$(join <(sort "$xml.cpus-before") <(sort "$xml.cpus-after") \
  | awk '$3 != $5 {printf "%s%s (pid %s) was on %s, now %s", sep, $2, $1, $3, $5; sep = "; "}')
if cmp -s "$xml.before" "$xml.after" && [ -z "$cpus_changed" ]; then
  echo "Verdict: every hugepage pool and every process's CPUs were restored exactly."
  verdict=0
else
  echo "Verdict: NOT restored: $(join <(sort "$xml.before") <(sort "$xml.after") \
    | awk '$2 != $3 {printf "%s%s was %s, now %s", sep, $1, $2, $3; sep = "; "}') $cpus_changed"
  verdict=1
fi
echo "(cleaning up: the VM, the hook, and the daemons this demo started)"
exit "$verdict"
