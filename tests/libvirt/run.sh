#!/usr/bin/env bash
# Tier 4 (DESIGN.md): the machine's real libvirtd runs kvmtune as its QEMU hook while small TCG
# VMs are defined, started and destroyed with virsh. Checks the contract of SPEC.md on the real
# kernel pools of node 0.
#
#   KVMTUNE_BIN=/path/to/kvmtune tests/libvirt/run.sh [--capture-fixtures]
#
# --capture-fixtures also saves the XML libvirt produces for the test domains into
# tests/fixtures/libvirt/ (for the unit tests of the domain parser).
# Output: one "PASS libvirt/<name>" or "FAIL libvirt/<name>: reason" per test, then
# "N passed, M failed". Exit status is non-zero when anything failed. Needs root.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/libvirt/lib.sh
source "$here/lib.sh"

CAPTURE=0
[ "${1:-}" = --capture-fixtures ] && CAPTURE=1
FIXTURES=$LT_REPO/tests/fixtures/libvirt

BIN=${KVMTUNE_BIN:?set KVMTUNE_BIN to the kvmtune binary under test}
BIN=$(readlink -f "$BIN")

PASSED=0
FAILED=0
pass() { echo "PASS libvirt/$1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL libvirt/$1: $2"; FAILED=$((FAILED + 1)); }
# For a failure message: what libvirtd asked the hook for that domain.
calls() { local c; c=$(lt_hook_calls "$1"); [ -z "$c" ] || echo " [hook calls: $c]"; }
info() { echo "  info libvirt/$1: $2"; }

PAGE_KB=$(awk '/^Hugepagesize:/{print $2}' /proc/meminfo)   # libvirt's default page size
pool() { lt_pool 0 "$PAGE_KB" "${1:-nr_hugepages}"; }

# Files under /run/kvmtune (the lock aside) that name the domain or its UUID, in path or content.
journal_for() {
  local name=$1 uuid=$2
  [ -d "$LT_STATE_DIR" ] || return 0
  find "$LT_STATE_DIR" -type f ! -name lock 2>/dev/null | while read -r f; do
    case "$f" in *"$name"* | *"$uuid"*) echo "$f"; continue ;; esac
    grep -qsF -e "$name" -e "$uuid" "$f" && echo "$f"
  done
}

# The pool diff between two snapshots, one "path before -> after" per changed file.
pool_diff() {
  join <(sort "$1") <(sort "$2") | awk '$2 != $3 {printf "%s %s -> %s; ", $1, $2, $3}'
}

capture() {  # NAME FILE [--inactive]
  [ "$CAPTURE" = 1 ] || return 0
  mkdir -p "$FIXTURES"
  virsh_ dumpxml "${@:3}" "$1" >"$FIXTURES/$2"
}

define_from() {  # NAME XML-TEXT
  printf '%s\n' "$2" >"$WORK/$1.xml"
  lt_define "$1" "$WORK/$1.xml"
}

# Start NAME (hugepage-backed, NEED pages of PAGE_KB), check the pool grows by what the free
# pool could not cover, destroy it, check the pool comes back exactly and no journal is left.
# Sets REASON on failure. Optional 3rd/4th args: fixture names for the live and inactive XML.
hugepage_cycle() {
  local name=$1 uuid=$2 need=$3 live_fixture=${4:-} inactive_fixture=${5:-}
  local nr0 free0 grow expect out state nr1 nr2 left
  nr0=$(pool) free0=$(pool free_hugepages)
  grow=$((need > free0 ? need - free0 : 0))
  expect=$((nr0 + grow))
  [ -n "$inactive_fixture" ] && capture "$name" "$inactive_fixture" --inactive
  if ! out=$(virsh_ start "$name" 2>&1); then
    REASON="virsh start failed: $(echo "$out" | tr '\n' ' ')"
    return 1
  fi
  state=$(lt_domain_state "$name")
  nr1=$(pool)
  [ -n "$live_fixture" ] && capture "$name" "$live_fixture"
  virsh_ destroy "$name" >/dev/null 2>&1
  nr2=$(pool)
  left=$(journal_for "$name" "$uuid")
  if [ "$state" != running ]; then
    REASON="domain state after start is '$state', not running"
  elif [ "$nr1" != "$expect" ]; then
    REASON="node0 ${PAGE_KB} kB pool while running is $nr1, expected $expect (start $nr0, free $free0, VM needs $need)"
  elif [ "$nr2" != "$nr0" ]; then
    REASON="node0 ${PAGE_KB} kB pool after destroy is $nr2, expected the start value $nr0 (it was $nr1 while running)"
  elif [ -n "$left" ]; then
    REASON="$LT_STATE_DIR still holds state for $name after destroy: $(echo "$left" | tr '\n' ' ')"
  else
    info "$name" "node0 ${PAGE_KB} kB pool $nr0 -> $nr1 -> $nr2"
    return 0
  fi
  return 1
}

# ---- tests -----------------------------------------------------------------------------------

test_hugepage_vm() {
  local t=hugepage-vm name=${LT_DOMAIN_PREFIX}huge uuid=6b0c7a52-0000-4000-8000-000000000001
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" 128 hugepages)" || { fail $t "virsh define failed"; return; }
  REASON=
  if hugepage_cycle "$name" "$uuid" $((128 * 1024 / PAGE_KB)) hugepage-running.xml hugepage-inactive.xml; then
    pass $t
  else
    fail $t "$REASON$(calls "$name")"
  fi
}

test_too_big_vm() {
  local t=too-big-vm name=${LT_DOMAIN_PREFIX}too-big uuid=6b0c7a52-0000-4000-8000-000000000002
  local before after out rc state left
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" $((64 * 1024)) hugepages)" || { fail $t "virsh define failed"; return; }
  lt_pools_snapshot >"$WORK/before"
  out=$(virsh_ start "$name" 2>&1)
  rc=$?
  lt_pools_snapshot >"$WORK/after"
  state=$(lt_domain_state "$name")
  left=$(journal_for "$name" "$uuid")
  info $t "virsh said: $(echo "$out" | tr '\n' ' ')"
  if [ $rc = 0 ]; then
    lt_destroy_quiet "$name"
    fail $t "virsh start of a 64 GiB hugepage VM succeeded on a $(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1048576)) GiB host$(calls "$name")"
  elif ! grep -q 'kvmtune: ' <<<"$out"; then
    fail $t "virsh's error does not carry kvmtune's line (kvmtune: ...): $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  elif ! grep -q 'Hook script execution failed' <<<"$out"; then
    fail $t "the start failed, but not in the hook: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  elif [ "$(grep -c 'kvmtune: ' <<<"$out")" != 1 ]; then
    fail $t "kvmtune's error is more than one line: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  elif ! cmp -s "$WORK/before" "$WORK/after"; then
    fail $t "pools changed by a failed start: $(pool_diff "$WORK/before" "$WORK/after")$(calls "$name")"
  elif [ "$state" != "shut off" ]; then
    fail $t "domain state after the failed start is '$state'$(calls "$name")"
  elif [ -n "$left" ]; then
    fail $t "$LT_STATE_DIR holds state for $name after the failed start: $(echo "$left" | tr '\n' ' ')$(calls "$name")"
  else
    pass $t
  fi
}

test_no_hugepages_vm() {
  local t=no-hugepages-vm name=${LT_DOMAIN_PREFIX}plain uuid=6b0c7a52-0000-4000-8000-000000000003
  local out state t0 t1 left
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" 128 none)" || { fail $t "virsh define failed"; return; }
  lt_pools_snapshot >"$WORK/before"
  t0=$(date +%s%N)
  out=$(virsh_ start "$name" 2>&1) || { fail $t "virsh start failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"; return; }
  t1=$(date +%s%N)
  state=$(lt_domain_state "$name")
  lt_pools_snapshot >"$WORK/running"
  virsh_ destroy "$name" >/dev/null 2>&1
  lt_pools_snapshot >"$WORK/after"
  left=$(journal_for "$name" "$uuid")
  # Not asserted: timings on a shared machine are noise. For the record only.
  local prep
  prep=$(lt_prepare_ms "$name")
  info $t "virsh start -> running took $(((t1 - t0) / 1000000)) ms${prep:+, of which the prepare hook ~$prep ms} (not asserted)"
  if [ "$state" != running ]; then
    fail $t "domain state after start is '$state', not running$(calls "$name")"
  elif ! cmp -s "$WORK/before" "$WORK/running"; then
    fail $t "pools changed while a VM without hugepages runs: $(pool_diff "$WORK/before" "$WORK/running")$(calls "$name")"
  elif ! cmp -s "$WORK/before" "$WORK/after"; then
    fail $t "pools changed after a VM without hugepages stopped: $(pool_diff "$WORK/before" "$WORK/after")$(calls "$name")"
  elif [ -n "$left" ]; then
    fail $t "$LT_STATE_DIR holds state for $name: $(echo "$left" | tr '\n' ' ')$(calls "$name")"
  else
    pass $t
  fi
}

test_admin_pool() {
  local t=admin-pool name=${LT_DOMAIN_PREFIX}admin uuid=6b0c7a52-0000-4000-8000-000000000004
  local orig out state nr1 nr2 admin=$((200 * 1024 / PAGE_KB))
  # 100 pages of 2 MiB (200 MiB) set up by the admin, more than the 64 the VM needs.
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" 128 hugepages)" || { fail $t "virsh define failed"; return; }
  orig=$(pool)
  lt_set_pool 0 "$PAGE_KB" "$admin"
  if [ "$(pool)" != "$admin" ]; then
    fail $t "could not set node0's pool to $admin (kernel gave $(pool))$(calls "$name")"
    lt_set_pool 0 "$PAGE_KB" "$orig"
    return
  fi
  if ! out=$(virsh_ start "$name" 2>&1); then
    fail $t "virsh start failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  else
    state=$(lt_domain_state "$name")
    nr1=$(pool)
    virsh_ destroy "$name" >/dev/null 2>&1
    nr2=$(pool)
    if [ "$state" != running ]; then
      fail $t "domain state after start is '$state', not running$(calls "$name")"
    elif [ "$nr1" != "$admin" ]; then
      fail $t "node0's admin pool of $admin pages became $nr1 while a 128 MiB VM runs (free pages covered it)$(calls "$name")"
    elif [ "$nr2" != "$admin" ]; then
      fail $t "node0's admin pool of $admin pages is $nr2 after destroy$(calls "$name")"
    else
      pass $t
    fi
  fi
  lt_set_pool 0 "$PAGE_KB" "$orig"
}

# Guest NUMA cells, each bound to host node 0 by <memnode>: the pages still come from node 0.
test_numa_cells_vm() {
  local t=numa-cells-vm name=${LT_DOMAIN_PREFIX}cells uuid=6b0c7a52-0000-4000-8000-000000000005 xml
  xml=$(lt_domain_xml "$name" "$uuid" 128 hugepages "  <cpu mode='custom' match='exact'>
    <model fallback='allow'>qemu64</model>
    <numa>
      <cell id='0' cpus='0' memory='64' unit='MiB'/>
      <cell id='1' cpus='1' memory='64' unit='MiB'/>
    </numa>
  </cpu>")
  xml=${xml/<vcpu placement=\'static\'>1<\/vcpu>/<vcpu placement=\'static\'>2<\/vcpu>}
  xml=${xml/<vcpupin vcpu=\'0\' cpuset=\'1\'\/>/<vcpupin vcpu=\'0\' cpuset=\'1\'\/><vcpupin vcpu=\'1\' cpuset=\'1\'\/>}
  xml=${xml/<memory mode=\'strict\' nodeset=\'0\'\/>/<memory mode=\'strict\' nodeset=\'0\'\/><memnode cellid=\'0\' mode=\'strict\' nodeset=\'0\'\/><memnode cellid=\'1\' mode=\'strict\' nodeset=\'0\'\/>}
  define_from "$name" "$xml" || { fail $t "virsh define failed"; return; }
  REASON=
  if hugepage_cycle "$name" "$uuid" $((128 * 1024 / PAGE_KB)) numa-cells-running.xml numa-cells-inactive.xml; then
    pass $t
  else
    fail $t "$REASON$(calls "$name")"
  fi
}

# reserve="on" in kvmtune's metadata, set the way SPEC.md shows, on a hugepage-backed VM.
test_metadata_vm() {
  local t=metadata-reserve-on name=${LT_DOMAIN_PREFIX}meta uuid=6b0c7a52-0000-4000-8000-000000000006 out
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" 128 hugepages)" || { fail $t "virsh define failed"; return; }
  if ! out=$(virsh_ metadata "$name" --uri urn:kvmtune:1 --key kvmtune --config \
    --set '<tune><hugepages reserve="on"/></tune>' 2>&1); then
    fail $t "virsh metadata --set failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
    return
  fi
  REASON=
  if hugepage_cycle "$name" "$uuid" $((128 * 1024 / PAGE_KB)) metadata-running.xml metadata-inactive.xml; then
    pass $t
  else
    fail $t "$REASON$(calls "$name")"
  fi
}

# Not a test of kvmtune: records what libvirt keeps of a PCI hostdev with an address that does
# not exist on this host (defined only; starting it would need the device).
capture_hostdev() {
  local name=${LT_DOMAIN_PREFIX}hostdev uuid=6b0c7a52-0000-4000-8000-000000000007 out
  [ "$CAPTURE" = 1 ] || return 0
  local xml
  xml=$(lt_domain_xml "$name" "$uuid" 128 hugepages)
  xml=${xml/<memballoon model=\'none\'\/>/<hostdev mode=\'subsystem\' type=\'pci\' managed=\'yes\'>
      <source><address domain=\'0x0000\' bus=\'0x3b\' slot=\'0x00\' function=\'0x1\'\/><\/source>
    <\/hostdev>
    <memballoon model=\'none\'\/>}
  if ! define_from "$name" "$xml" 2>"$WORK/hostdev.err"; then
    info hostdev "libvirt refused to define a PCI hostdev: $(tr '\n' ' ' <"$WORK/hostdev.err")"
    return 0
  fi
  capture "$name" hostdev-inactive.xml --inactive
}

# ---- main ------------------------------------------------------------------------------------

T0=$(date +%s)
if [ "$CAPTURE" = 1 ]; then
  # Also keep what libvirt writes on the hook's stdin (needs a libvirtd started by us).
  export LT_CAPTURE_STDIN_DIR=$LT_LOG_DIR/hook-stdin
  rm -rf "$LT_CAPTURE_STDIN_DIR"
fi
lt_setup "$BIN"
WORK=$(mktemp -d /tmp/kvmtune-libvirt.XXXXXX)
trap 'lt_teardown; rm -rf "$WORK"' EXIT
echo "libvirt tier: $(virsh -c "$LT_URI" version 2>/dev/null | awk '/Running hypervisor|Using library/' | tr -s ' ' | paste -sd';'), hook $LT_HOOK -> $(readlink -f "$LT_HOOK")"

test_hugepage_vm
test_too_big_vm
test_no_hugepages_vm
test_admin_pool
test_numa_cells_vm
test_metadata_vm
capture_hostdev
if [ "$CAPTURE" = 1 ]; then
  for f in huge.prepare.begin huge.started.begin huge.release.end meta.prepare.begin \
    cells.prepare.begin plain.prepare.begin too-big.prepare.begin too-big.release.end; do
    src=$LT_CAPTURE_STDIN_DIR/$LT_DOMAIN_PREFIX$f.xml
    [ -f "$src" ] && cp "$src" "$FIXTURES/hook-stdin-$f.xml"
  done
fi

info total "$(($(date +%s) - T0)) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
