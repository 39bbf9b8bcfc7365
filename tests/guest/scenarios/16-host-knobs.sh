# topologies: 2node
# Host knobs on a real kernel: KSM runs with pages merged (a helper marks identical pages
# MADV_MERGEABLE), and the kernel refuses a change of merge_across_nodes then (EBUSY), as the
# fake kernel models it. The policy holds KSM stopped for VMs whose metadata asks,
# merge_across_nodes = 0 for hugepage-backed VMs, THP enabled/defrag = never and
# vm.stat_interval = 120 for VMs whose metadata asks. Two VMs share KSM's knobs: only the last
# one out puts them back. A VM that wants another value than the one held (the policy changed)
# is refused with one line. Every knob ends as it was; `kvmtune status` shows what is held.
. /tests/lib.sh

KSM=/sys/kernel/mm/ksm
THP=/sys/kernel/mm/transparent_hugepage
[ -e $KSM/run ] || fail "harness: this kernel has no $KSM (CONFIG_KSM)"
[ -e $KSM/merge_across_nodes ] || fail "harness: this kernel has no $KSM/merge_across_nodes (CONFIG_NUMA)"
[ -e $THP/enabled ] || fail "harness: this kernel has no $THP (CONFIG_TRANSPARENT_HUGEPAGE)"

# What init does not reset between scenarios: put KSM's settings back, unmerge, stop the helper.
orig_run=$(cat $KSM/run); orig_scan=$(cat $KSM/pages_to_scan); orig_sleep=$(cat $KSM/sleep_millisecs)
helper=""
cleanup() {
  [ -n "$helper" ] && kill "$helper" 2>/dev/null
  echo 2 > $KSM/run
  echo 1 > $KSM/merge_across_nodes
  echo "$orig_run" > $KSM/run; echo "$orig_scan" > $KSM/pages_to_scan; echo "$orig_sleep" > $KSM/sleep_millisecs
}
trap cleanup EXIT

# The knobs, one line: what must come back.
knobs() {
  echo "ksm.run=$(cat $KSM/run) ksm.merge_across_nodes=$(cat $KSM/merge_across_nodes)" \
       "thp.enabled=$(cat $THP/enabled | tr ' ' _) thp.defrag=$(cat $THP/defrag | tr ' ' _)" \
       "vm.stat_interval=$(cat /proc/sys/vm/stat_interval)"
}
expect_eq() { [ "$1" = "$2" ] || fail "$3: '$1', expected '$2'"; }
shared() { cat $KSM/pages_shared; }
# wait_merged WHAT: ksmd merges the helper's pages (a few scans under TCG).
wait_merged() {
  local i=0
  while [ "$(shared)" = 0 ]; do
    i=$((i + 1)); [ $i -le 100 ] || fail "$1: ksmd merged nothing in 20 s (pages_shared 0)"
    sleep 0.2
  done
  note "$1: KSM has $(shared) pages shared, $(cat $KSM/pages_sharing) sharing"
}

# KSM as a host that uses it: running, scanning fast, with identical pages to merge.
echo 5000 > $KSM/pages_to_scan; echo 20 > $KSM/sleep_millisecs; echo 1 > $KSM/run
ksm-pages 512 120 & helper=$!
wait_merged "before the VMs"
# The kernel's own rule, which kvmtune works around: no merge_across_nodes change while merged.
if echo 0 > $KSM/merge_across_nodes 2>/tmp/mergeerr; then
  fail "harness: the kernel took merge_across_nodes = 0 with $(shared) pages merged; expected EBUSY"
fi
note "the kernel refuses merge_across_nodes while pages are merged: $(cat /tmp/mergeerr)"
base=$(knobs)
note "before: $base"

mkdir -p /etc/kvmtune
cat > /etc/kvmtune/kvmtune.toml <<'EOF'
[ksm]
stop_for = ["metadata"]
merge_across_nodes = 0
merge_for = ["hugepages"]
[thp]
enabled = "never"
defrag = "never"
for = ["metadata"]
[sysctl]
for = ["metadata"]
values = { "vm.stat_interval" = 120 }
EOF
export KVMTUNE_CONFIG=/etc/kvmtune/kvmtune.toml
meta() { echo "<metadata><k:tune xmlns:k='urn:kvmtune:1'>$1</k:tune></metadata>"; }

# VM A wants everything; VM B only KSM stopped (and, hugepage-backed, merge_across_nodes).
mkdom /tmp/a.xml s16-a 64 "" "$(strict 1)" "$(meta "<k:ksm run='off'/><k:thp apply='on'/><k:sysctl apply='on'/>")"
mkdom /tmp/b.xml s16-b 64 "" "$(strict 1)" "$(meta "<k:ksm run='off'/>")"

vm_prepare s16-a /tmp/a.xml
expect_eq "$(knobs)" "ksm.run=0 ksm.merge_across_nodes=0 thp.enabled=always_madvise_[never] thp.defrag=always_defer_defer+madvise_madvise_[never] vm.stat_interval=120" "after prepare of A"
expect_eq "$(shared)" 0 "after prepare of A: pages merged (unmerged before merge_across_nodes)"
vm_run s16-a /tmp/a.xml 1:$HP2M:32
"$KT" status > /tmp/status.out 2>&1 || fail "kvmtune status exited $?"
sed -n '/^Host knobs:/,$p' /tmp/status.out | sed 's/^/  status: /'
for line in \
  "  KSM: run 0, merge_across_nodes 0, 0 page(s) shared, 0 sharing" \
  "  THP: enabled never, defrag never" \
  "  /sys/kernel/mm/ksm/merge_across_nodes = 0 for VM \"s16-a\", back to 1 after" \
  "  /proc/sys/vm/stat_interval = 120 for VM \"s16-a\", back to 1 after"; do
  grep -qxF "$line" /tmp/status.out || fail "status does not show: $line"
done

vm_start s16-b /tmp/b.xml 1:$HP2M:32
"$KT" status > /tmp/status.out 2>&1
grep -qxF '  /sys/kernel/mm/ksm/run = 0 for VM "s16-a", "s16-b", back to 1 after' /tmp/status.out ||
  fail "status does not show KSM stopped for both VMs: $(grep ksm/run /tmp/status.out)"

# The policy changes while they run: a VM that wants THP at another value is refused.
sed -i 's/^enabled = "never"/enabled = "madvise"/' /etc/kvmtune/kvmtune.toml
mkdom /tmp/c.xml s16-c 64 "" "$(strict 1)" "$(meta "<k:thp apply='on'/>")"
hook_fails s16-c prepare begin - /tmp/c.xml
grep -qF "kvmtune holds it at never for VM 's16-a'" /tmp/hook.err || fail "refusal does not say who holds the knob: $(cat /tmp/hook.err)"
hook_ok s16-c release end - /tmp/c.xml
sed -i 's/^enabled = "madvise"/enabled = "never"/' /etc/kvmtune/kvmtune.toml

vm_stop s16-a /tmp/a.xml destroyed
expect_eq "$(knobs)" "$(echo "$base" | sed 's/^ksm.run=1 ksm.merge_across_nodes=1 /ksm.run=0 ksm.merge_across_nodes=0 /')" "after release of A (B holds KSM's knobs)"

vm_stop s16-b /tmp/b.xml destroyed
expect_eq "$(knobs)" "$base" "after release of B"
wait_merged "after release of B (KSM runs again)"
check_state_clean
