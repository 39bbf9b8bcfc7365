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
  local out rc state left mib host_mib
  # 64 GiB, or twice the host's memory where that is more.
  host_mib=$(($(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024))
  mib=$((2 * host_mib > 65536 ? 2 * host_mib : 65536))
  define_from "$name" "$(lt_domain_xml "$name" "$uuid" "$mib" hugepages)" || { fail $t "virsh define failed"; return; }
  lt_pools_snapshot >"$WORK/before"
  out=$(virsh_ start "$name" 2>&1)
  rc=$?
  lt_pools_snapshot >"$WORK/after"
  state=$(lt_domain_state "$name")
  left=$(journal_for "$name" "$uuid")
  info $t "virsh said: $(echo "$out" | tr '\n' ' ')"
  if [ $rc = 0 ]; then
    lt_destroy_quiet "$name"
    fail $t "virsh start of a $((mib / 1024)) GiB hugepage VM succeeded on a $((host_mib / 1024)) GiB host$(calls "$name")"
  elif ! grep -q 'kvmtune: ' <<<"$out"; then
    fail $t "virsh's error does not carry kvmtune's line (kvmtune: ...): $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  elif ! grep -q 'Hook script execution failed' <<<"$out"; then
    fail $t "the start failed, but not in the hook: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
  elif [ "$(grep -c 'kvmtune: ' <<<"$out")" != 1 ] \
    || awk '/kvmtune: /{found=1; next} found && NF {extra=1} END {exit !extra}' <<<"$out"; then
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

# `kvmtune status --json` while a hugepage VM runs lists it with the pages kvmtune added, and
# forgets it after destroy. Pool figures are checked with python3 when the machine has it.
status_json_check() {  # FILE NAME ADDED -> prints a reason, or nothing when fine
  command -v python3 >/dev/null || { grep -q "\"$2\"" "$1" || [ "$3" = 0 ] || echo "the VM is not in it"; return; }
  python3 - "$1" "$2" "$3" "$PAGE_KB" <<'PY'
import json, sys
path, name, added, page_kib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
try:
    doc = json.load(open(path))
except ValueError as e:
    print(f"not JSON: {e}"); sys.exit()
listed = name in json.dumps(doc.get("vms", []))
if added and not listed:
    print("the VM is not under vms")
if not added and listed:
    print("the VM is still under vms")
pools = [p for p in doc.get("pools", []) if p.get("node") == 0 and p.get("page_kib") == page_kib]
if not pools:
    print(f"no pool for node 0, {page_kib} kB")
elif pools[0].get("added_by_kvmtune") != added:
    print(f"node 0's pool says added_by_kvmtune={pools[0].get('added_by_kvmtune')}, expected {added}")
PY
}

test_status_json() {
  local t=status-json name=${LT_DOMAIN_PREFIX}huge out nr0 free0 need grow why1 why2 rc1 rc2
  need=$((128 * 1024 / PAGE_KB))
  nr0=$(pool) free0=$(pool free_hugepages)
  grow=$((need > free0 ? need - free0 : 0))
  if ! out=$(virsh_ start "$name" 2>&1); then
    fail $t "virsh start failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"
    return
  fi
  "$BIN" status --json >"$WORK/status-running.json" 2>"$WORK/status.err"
  rc1=$?
  virsh_ destroy "$name" >/dev/null 2>&1
  "$BIN" status --json >"$WORK/status-after.json" 2>>"$WORK/status.err"
  rc2=$?
  why1=$(status_json_check "$WORK/status-running.json" "$name" "$grow" | paste -sd';')
  why2=$(status_json_check "$WORK/status-after.json" "$name" 0 | paste -sd';')
  if [ "$rc1" != 0 ] || [ "$rc2" != 0 ]; then
    fail $t "kvmtune status --json exited $rc1 (running) / $rc2 (after): $(tr '\n' ' ' <"$WORK/status.err")"
  elif [ -n "$why1" ]; then
    fail $t "while $name runs (kvmtune added $grow pages): $why1"
  elif [ -n "$why2" ]; then
    fail $t "after $name was destroyed: $why2"
  else
    pass $t
  fi
}

# Two hugepage VMs on node 0: each adds its own pages; stopping one gives back only its own.
test_two_vms() {
  local t=two-vms a=${LT_DOMAIN_PREFIX}two-a b=${LT_DOMAIN_PREFIX}two-b need out
  local nr0 ga gb nr_a nr_ab nr_b nr_end free
  need=$((128 * 1024 / PAGE_KB))
  define_from "$a" "$(lt_domain_xml "$a" 6b0c7a52-0000-4000-8000-000000000008 128 hugepages)" || { fail $t "virsh define failed"; return; }
  define_from "$b" "$(lt_domain_xml "$b" 6b0c7a52-0000-4000-8000-000000000009 128 hugepages)" || { fail $t "virsh define failed"; return; }
  nr0=$(pool) free=$(pool free_hugepages)
  ga=$((need > free ? need - free : 0))
  out=$(virsh_ start "$a" 2>&1) || { fail $t "virsh start $a failed: $(echo "$out" | tr '\n' ' ')$(calls "$a")"; return; }
  nr_a=$(pool) free=$(pool free_hugepages)
  gb=$((need > free ? need - free : 0))
  out=$(virsh_ start "$b" 2>&1) || { fail $t "virsh start $b failed: $(echo "$out" | tr '\n' ' ')$(calls "$b")"; lt_destroy_quiet "$a"; return; }
  nr_ab=$(pool)
  virsh_ destroy "$a" >/dev/null 2>&1
  nr_b=$(pool)
  virsh_ destroy "$b" >/dev/null 2>&1
  nr_end=$(pool)
  info $t "node0 ${PAGE_KB} kB pool $nr0 -> +$a $nr_a -> +$b $nr_ab -> -$a $nr_b -> -$b $nr_end"
  if [ "$nr_a" != $((nr0 + ga)) ]; then
    fail $t "pool with $a running is $nr_a, expected $((nr0 + ga))"
  elif [ "$nr_ab" != $((nr_a + gb)) ]; then
    fail $t "pool with both running is $nr_ab, expected $((nr_a + gb))"
  elif [ "$nr_b" != $((nr0 + gb)) ]; then
    fail $t "pool after destroying $a (while $b runs) is $nr_b, expected $((nr0 + gb)): $a added $ga, $b added $gb$(calls "$a")"
  elif [ "$nr_end" != "$nr0" ]; then
    fail $t "pool after destroying both is $nr_end, expected the start value $nr0$(calls "$b")"
  else
    pass $t
  fi
}

# QEMU refuses its command line, so the start fails after kvmtune's prepare reserved pages:
# libvirt then runs stopped + release, and the pool must come back.
test_failed_start_after_prepare() {
  local t=failed-start-after-prepare name=${LT_DOMAIN_PREFIX}qemu-fails uuid=6b0c7a52-0000-4000-8000-00000000000a
  local xml out rc left
  xml=$(lt_domain_xml "$name" "$uuid" 128 hugepages "  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
    <qemu:arg value='-kvmtune-test-no-such-option'/>
  </qemu:commandline>")
  define_from "$name" "$xml" || { fail $t "virsh define failed"; return; }
  lt_pools_snapshot >"$WORK/before"
  out=$(virsh_ start "$name" 2>&1)
  rc=$?
  lt_pools_snapshot >"$WORK/after"
  left=$(journal_for "$name" "$uuid")
  if [ $rc = 0 ]; then
    lt_destroy_quiet "$name"
    fail $t "QEMU started with a bogus option; the test cannot make the start fail"
  elif grep -q 'kvmtune: ' <<<"$out"; then
    fail $t "kvmtune refused the start, which was meant to fail in QEMU: $(echo "$out" | tr '\n' ' ')"
  elif ! cmp -s "$WORK/before" "$WORK/after"; then
    fail $t "pools differ after a start that failed in QEMU: $(pool_diff "$WORK/before" "$WORK/after")$(calls "$name")"
  elif [ -n "$left" ]; then
    fail $t "$LT_STATE_DIR holds state for $name after the failed start: $(echo "$left" | tr '\n' ' ')$(calls "$name")"
  else
    info $t "hook calls: $(lt_hook_calls "$name")"
    pass $t
  fi
}

# libvirtd restarts while a hugepage VM runs: the VM gets `reconnect` and must survive it (a
# failing reconnect makes libvirt kill the VM), its pages stay, and a later destroy gives them back.
test_libvirtd_restart() {
  local t=libvirtd-restart name=${LT_DOMAIN_PREFIX}huge uuid=6b0c7a52-0000-4000-8000-000000000001
  local out nr0 nr1 nr2 nr3 state left
  if [ -z "$(lt_our_libvirtd)" ]; then
    echo "SKIP libvirt/$t: libvirtd was not started by this run"
    return
  fi
  nr0=$(pool)
  out=$(virsh_ start "$name" 2>&1) || { fail $t "virsh start failed: $(echo "$out" | tr '\n' ' ')$(calls "$name")"; return; }
  nr1=$(pool)
  if ! lt_restart_libvirtd; then
    fail $t "libvirtd did not come back after a restart (log: $LT_LOG_DIR/libvirtd.log)"
    return
  fi
  sleep 1
  state=$(lt_domain_state "$name")
  nr2=$(pool)
  virsh_ destroy "$name" >/dev/null 2>&1
  nr3=$(pool)
  left=$(journal_for "$name" "$uuid")
  info $t "node0 ${PAGE_KB} kB pool $nr0 -> $nr1 -> (restart) $nr2 -> (destroy) $nr3; hook calls: $(lt_hook_calls "$name" | sed 's/.*started begin -, //')"
  if [ "$state" != running ]; then
    fail $t "after the libvirtd restart the VM is '$state', not running$(calls "$name")"
  elif [ "$nr2" != "$nr1" ]; then
    fail $t "the pool changed across the restart: $nr1 -> $nr2$(calls "$name")"
  elif [ "$nr3" != "$nr0" ]; then
    fail $t "pool after destroy is $nr3, expected the start value $nr0$(calls "$name")"
  elif [ -n "$left" ]; then
    fail $t "$LT_STATE_DIR holds state for $name after destroy: $(echo "$left" | tr '\n' ' ')"
  else
    pass $t
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
test_status_json
test_two_vms
test_failed_start_after_prepare
test_libvirtd_restart
capture_hostdev
if [ "$CAPTURE" = 1 ]; then
  for f in huge.prepare.begin huge.start.begin huge.started.begin huge.reconnect.begin \
    huge.release.end meta.prepare.begin cells.prepare.begin plain.prepare.begin \
    too-big.prepare.begin too-big.release.end qemu-fails.prepare.begin; do
    src=$LT_CAPTURE_STDIN_DIR/$LT_DOMAIN_PREFIX$f.xml
    [ -f "$src" ] && cp "$src" "$FIXTURES/hook-stdin-$f.xml"
  done
fi

info total "$(($(date +%s) - T0)) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
