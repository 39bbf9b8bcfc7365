# timeout: 150
# MSI-X vectors that appear after `started`, as when a guest's driver enables them, and again
# renumbered, as after a guest reboot: the watcher pins them to the VM's IRQ CPUs within a
# second. QEMU's part is played by a small VFIO program (vfio-msix.c) under `kvmtune run`, with
# the e1000e at 00:03.0 bound to vfio-pci: it opens the device at start and enables its MSI-X
# vectors only when told to. When it exits, the IRQs are gone and the host is as before.
. /hv/guest/lib.sh
BDF=0000:00:03.0
watcher=$(systemctl list-units --no-legend --plain 'kvmtune-*watch*.service' | awk '{print $1}' | head -1)
[ -n "$watcher" ] && systemctl is-active --quiet "$watcher" || fail "no kvmtune watcher service runs (the package starts it)"
note "watcher: $watcher"
bind_vfio $BDF
save_state /tmp/base
run_pid=""
cleanup() {
  [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
  restore_driver $BDF
}
trap cleanup EXIT
kvmtune run --name hv-msix --irq 3 -- /hv/bin/vfio-msix -m 64 -device vfio-pci,host=$BDF > /tmp/run.out 2>&1 &
run_pid=$!
trap 'cleanup; cat /tmp/run.out' EXIT
wait_for 30 "vfio-msix did not open the device" grep -q 'open through' /tmp/run.out
wait_for 30 "kvmtune status does not list hv-msix as running" bash -c 'kvmtune status | grep -q "\"hv-msix\" (running)"'
prog=$(pgrep -x vfio-msix)
[ -n "$(vfio_irqs $BDF)" ] && note "IRQs before the vectors: $(vfio_irqs $BDF)"

# The device's MSI-X vectors as /proc/interrupts names them, read once per look (the looks
# themselves must be quick next to the second allowed).
msix_irqs() { awk -v bdf="$BDF" 'index($0, "(" bdf ")") && /vfio-msix/ { sub(":", "", $1); print $1 }' /proc/interrupts; }
appeared() { [ -n "$(msix_irqs)" ]; }
pinned() {
  local irq any=1
  for irq in $(msix_irqs); do
    [ "$(< "/proc/irq/$irq/smp_affinity_list")" = 3 ] || return 1
    any=0
  done
  return $any
}
kill -USR1 "$prog"
wait_for 10 "the MSI-X vectors did not appear after vfio-msix enabled them" appeared
ms=$(wait_ms 1 "MSI-X vectors of $BDF not on CPU 3 within a second: $(for i in $(msix_irqs); do echo -n "$i:$(cat /proc/irq/$i/smp_affinity_list) "; done)" pinned)
note "late vectors $(msix_irqs | tr '\n' ' ')pinned to CPU 3 ${ms} ms after they appeared"
kill -USR2 "$prog"
wait_for 10 "vfio-msix did not re-enable the vectors" grep -q 're-enabled' /tmp/run.out
ms=$(wait_ms 1 "re-enabled MSI-X vectors not on CPU 3 within a second" pinned)
note "re-enabled vectors $(msix_irqs | tr '\n' ' ')pinned ${ms} ms after they came back"
kill "$run_pid"
wait "$run_pid"; rc=$?
run_pid=""
note "kvmtune run exited $rc: $(tail -2 /tmp/run.out | tr '\n' ' ')"
[ -z "$(vfio_irqs $BDF)" ] || fail "the device's IRQs outlived the program: $(vfio_irqs $BDF)"
kvmtune status | grep -q '"hv-msix"' && fail "kvmtune status still lists hv-msix"
expect_state /tmp/base "after the program exited"
