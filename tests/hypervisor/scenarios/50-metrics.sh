# timeout: 300
# Metrics where operators look, and a VM released that libvirt never released. Debian's
# prometheus-node-exporter runs as Debian starts it (textfile collector on
# /var/lib/prometheus/node-exporter, listening on :9100), and kvmtune-watch.service writes
# kvmtune.prom there. With an isolated, hugepage-backed VM running, `curl localhost:9100/metrics`
# serves kvmtune's series, parsed back by the collector without error, with the values
# `kvmtune status --json` reports: pools, what the VM holds, the isolation method, the
# counters, the watcher's last look. After the VM stops, its series are gone.
# Then libvirtd is stopped (service and sockets), and the VM's QEMU killed with SIGKILL: no
# release can come. The watcher releases the VM within a bound (it waits 10 s for a release
# that will not come; then the pool is back, the ledger without it, one line in the journal,
# counted); libvirtd restarts and finds nothing to undo.
. /hv/guest/lib.sh
TEXTFILE_DIR=/var/lib/prometheus/node-exporter
LIBVIRTD_UNITS="libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket"
restart_libvirtd() { systemctl start $LIBVIRTD_UNITS >/dev/null 2>&1; }
trap 'restart_libvirtd; cleanup_domains' EXIT

systemctl is-active --quiet prometheus-node-exporter.service || fail "prometheus-node-exporter does not run (Debian starts it)"
systemctl is-active --quiet kvmtune-watch.service || fail "kvmtune-watch.service does not run"
[ -d "$TEXTFILE_DIR" ] || fail "$TEXTFILE_DIR does not exist (Debian's package makes it)"
wait_for 30 "node_exporter does not answer on :9100" curl -sf -o /dev/null localhost:9100/metrics

# scrape: what node_exporter serves now, in /tmp/scrape.
scrape() { curl -sf localhost:9100/metrics > /tmp/scrape; }
# metric NAME [LABEL=VALUE...]: the value of the one series NAME with (at least) these labels
# in /tmp/scrape; empty when there is none. node_exporter orders labels by name and may print
# numbers in exponent form: labels are matched one by one, values normalised by awk.
metric() {
  local name=$1
  shift
  awk -v name="$name" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    $1 == name || index($1, name "{") == 1 {
      for (i = 1; i <= n; i++) {
        split(w[i], kv, "=")
        if (index($1, kv[1] "=\"" kv[2] "\"") == 0) next
      }
      printf "%.6f\n", $2; found++
    }
    END { if (found > 1) print "ambiguous" }' /tmp/scrape
}
# same WHAT A B: A and B are equal numbers (both printed by awk with 6 decimals).
same() {
  [ -n "$2" ] || fail "$1: node_exporter serves no such series"
  [ "$2" = "$(awk -v v="$3" 'BEGIN { printf "%.6f", v }')" ] || fail "$1: node_exporter serves $2, kvmtune status --json says $3"
}
vm_series() { grep -c 'vm="hv-metrics"' /tmp/scrape; }

save_state /tmp/base
b1=$(hp 1 2048 nr_hugepages)
define hv-metrics 50 vcpupin=3 emulatorpin=0 huge=64 node=1 'tune=<kvmtune:isolate cpus="vcpus"/>'
t0=$(date +%s)
start hv-metrics
# The watcher rewrites kvmtune.prom at its next look once a VM starts.
has_vm() { scrape && [ "$(metric kvmtune_vm_info vm=hv-metrics phase=running)" = 1.000000 ]; }
ms=$(wait_ms 30 "node_exporter does not serve kvmtune_vm_info of the running VM" has_vm)
note "kvmtune_vm_info of hv-metrics served $ms ms after virsh start returned"
kvmtune status --json > /tmp/status.json || fail "kvmtune status exited $? while the VM runs: $(jq -c .verdict /tmp/status.json)"
scrape || fail "curl localhost:9100/metrics failed"
grep '^kvmtune_' /tmp/scrape | sed 's/^/  /'

# The collector read the file without error.
same "node_textfile_scrape_error" "$(metric node_textfile_scrape_error)" 0
[ -n "$(metric node_textfile_mtime_seconds file=$TEXTFILE_DIR/kvmtune.prom)" ] ||
  fail "node_exporter does not list $TEXTFILE_DIR/kvmtune.prom"
same "kvmtune_promises_kept" "$(metric kvmtune_promises_kept)" "$(jq '.verdict.kept | if . then 1 else 0 end' /tmp/status.json)"
# Every pool: its size and what kvmtune added.
jq -r '.pools[] | "\(.node) \(.page_kib * 1024) \(.total) \(.added_by_kvmtune)"' /tmp/status.json > /tmp/pools
[ -s /tmp/pools ] || fail "kvmtune status --json lists no pool"
while read -r node size total added; do
  same "pool node $node, $size-byte pages" "$(metric kvmtune_hugepages_pool_pages node=$node page_size_bytes=$size)" "$total"
  same "pages kvmtune added, node $node, $size-byte pages" "$(metric kvmtune_hugepages_pool_added_pages node=$node page_size_bytes=$size)" "$added"
done < /tmp/pools
# What the VM holds.
vm='.vms[] | select(.name == "hv-metrics")'
jq -e "$vm" /tmp/status.json >/dev/null || fail "kvmtune status --json does not list hv-metrics"
jq -r "$vm | .hugepages[] | \"\(.pool.node) \(.pool.page_kib * 1024) \(.pages) \(.added)\"" /tmp/status.json > /tmp/held
[ -s /tmp/held ] || fail "kvmtune status --json says hv-metrics holds no hugepages"
while read -r node size pages added; do
  same "hv-metrics' pages on node $node" "$(metric kvmtune_vm_hugepages_held_pages vm=hv-metrics node=$node page_size_bytes=$size)" "$pages"
  same "pages added for hv-metrics on node $node" "$(metric kvmtune_vm_hugepages_added_pages vm=hv-metrics node=$node page_size_bytes=$size)" "$added"
done < /tmp/held
iso=$(jq -r "$vm | .isolate" /tmp/status.json)
count=0; for c in 0 1 2 3; do in_list "$iso" $c && count=$((count + 1)); done
same "isolated CPUs of hv-metrics ($iso)" "$(metric kvmtune_vm_isolated_cpus vm=hv-metrics)" "$count"
method=$(jq -r '.isolation.method' /tmp/status.json)
same "isolation method $method" "$(metric kvmtune_isolation_info method=$method)" 1
# The vCPU wait counter only grows: what node_exporter serves (the watcher's last look) is at
# most what status reads now.
wait_served=$(metric kvmtune_vm_vcpu_wait_seconds_total vm=hv-metrics)
wait_now=$(jq -r "$vm | .vcpu_wait_seconds" /tmp/status.json)
[ -n "$wait_served" ] && [ "$wait_now" != null ] || fail "no vCPU wait time for hv-metrics (served '$wait_served', status '$wait_now')"
awk -v a="$wait_served" -v b="$wait_now" 'BEGIN { exit !(a >= 0 && a <= b + 0.000001) }' ||
  fail "vCPU wait: node_exporter serves $wait_served s, status says $wait_now s"
note "hv-metrics' vCPUs waited $wait_now s for a host CPU"
# Counters, and the watcher's last look (since the VM started).
for kind in irq sweep isolation hugepages knob gone_vm; do
  same "repairs of kind $kind" "$(metric kvmtune_watch_repairs_total kind=$kind)" "$(jq ".counters.repairs.$kind // 0" /tmp/status.json)"
done
same "reservation failures" "$(metric kvmtune_hugepages_reservation_failures_total)" "$(jq .counters.reservation_failures /tmp/status.json)"
last=$(metric kvmtune_watch_last_pass_timestamp_seconds)
awk -v l="$last" -v t="$t0" -v s="$(jq '.watch.last_pass_ms / 1000' /tmp/status.json)" 'BEGIN { exit !(l >= t && s >= l) }' ||
  fail "the watcher's last look: served $last, status $(jq '.watch.last_pass_ms / 1000' /tmp/status.json), VM started at $t0"

stop hv-metrics
gone_series() { scrape && [ "$(vm_series)" = 0 ]; }
ms=$(wait_ms 30 "node_exporter still serves series of hv-metrics after it stopped: $(grep 'vm="hv-metrics"' /tmp/scrape | head -3 | tr '\n' ';')" gone_series)
note "hv-metrics' series gone $ms ms after it stopped"
wait_for 10 "node 1's pool not back to $b1 after the VM stopped" test "$(hp 1 2048 nr_hugepages)" = "$b1"

# QEMU dies while libvirtd is down: no `release` will come; the watcher releases the VM.
start hv-metrics
pid=$(qemu_pid hv-metrics)
[ -n "$pid" ] && [ -d "/proc/$pid" ] || fail "no QEMU pid for hv-metrics"
[ "$(hp 1 2048 nr_hugepages)" -gt "$b1" ] || fail "the pool did not grow for hv-metrics"
since=$(date '+%Y-%m-%d %H:%M:%S')
gone0=$(kvmtune status --json | jq '.counters.repairs.gone_vm // 0')
systemctl stop $LIBVIRTD_UNITS || fail "systemctl stop $LIBVIRTD_UNITS failed"
systemctl is-active --quiet libvirtd.service && fail "libvirtd still runs"
kill -9 "$pid"
released() {
  [ "$(hp 1 2048 nr_hugepages)" = "$b1" ] &&
    kvmtune status --json | jq -e '[.vms[].name] | index("hv-metrics") | not' >/dev/null
}
ms=$(wait_ms 30 "the watcher did not release hv-metrics (pool $(hp 1 2048 nr_hugepages), was $b1; ledger: $(kvmtune status --json | jq -c '[.vms[].name]'))" released)
note "the watcher released hv-metrics $ms ms after its QEMU was killed (libvirtd down)"
journalctl -t kvmtune --since "$since" --no-pager | grep -q "watch: gone_vm: released VM 'hv-metrics'" ||
  fail "no 'watch: gone_vm: released VM' line in the journal: $(journalctl -t kvmtune --since "$since" --no-pager | tail -3 | tr '\n' ';')"
[ "$(kvmtune status --json | jq '.counters.repairs.gone_vm')" = $((gone0 + 1)) ] || fail "the release is not counted as a gone_vm repair"
kvmtune status > /tmp/status.txt; rc=$?
[ "$rc" = 0 ] || fail "kvmtune status exits $rc after the watcher released the VM: $(head -1 /tmp/status.txt)"
restart_libvirtd || fail "libvirtd did not start again"
wait_for 30 "libvirtd did not come back" virsh_ list --name
wait_for 30 "hv-metrics is not shut off after libvirtd came back ($(virsh_ domstate hv-metrics 2>&1))" \
  bash -c "virsh -q -c $URI domstate hv-metrics | grep -q 'shut off'"
expect_state /tmp/base "after the watcher released the VM and libvirtd came back"
