# timeout: 240
# A real VFIO device under irqbalance as Debian starts it. The e1000e at 00:03.0 goes to
# vfio-pci and to an isolated VM (vCPU on CPU 3) as <hostdev managed='no'> with
# `irq cpus="vcpus"`. At `started` its vfio-intx IRQ (which appears when QEMU opens the device)
# is on CPU 3 and every other movable IRQ is off CPU 3; both hold through two of irqbalance's
# 10 s rebalancing rounds (irqbalance was told to keep off CPU 3, and its answer says so once a
# round has passed). irqbalance restarted meanwhile (a package upgrade) starts from its own set:
# kvmtune watch's next full look (metrics.interval, 15 s) bans it from CPU 3 again. After the VM
# stops, irqbalance has its own banned CPUs back, and the default IRQ affinity is as before.
. /hv/guest/lib.sh
BDF=0000:00:03.0
systemctl is-active --quiet irqbalance.service || fail "irqbalance does not run (Debian starts it)"
# irqbalance applies what it is told at its next round (10 s), and answers the old set until
# then: the scenario before this one may have given it its own set back moments ago.
banned0=$(irqbalance_own_banned)
wait_for 25 "irqbalance's banned CPUs are not its own ('$banned0') before the VM" irqbalance_banned_is "$banned0"
note "irqbalance banned before: '$banned0'"
default0=$(cat /proc/irq/default_smp_affinity)
bind_vfio $BDF
trap 'cleanup_domains; restore_driver $BDF' EXIT
define hv-vfio 40 vcpupin=3 emulatorpin=0 hostdev=$BDF 'tune=<kvmtune:isolate cpus="vcpus"/><kvmtune:irq cpus="vcpus"/>'
start hv-vfio
irqs=$(vfio_irqs $BDF)
[ -n "$irqs" ] || fail "no vfio IRQ of $BDF in /proc/interrupts after start"
note "vfio IRQs of $BDF: $irqs"
banned=$(irqbalance_banned)
note "irqbalance banned while the VM runs: '$banned'"

# check_irqs WHEN: the device's IRQs on CPU 3, no other movable IRQ there.
check_irqs() {
  local irq aff others=""
  for irq in $irqs; do
    aff=$(cat /proc/irq/$irq/smp_affinity_list)
    [ "$aff" = 3 ] || fail "$1: vfio IRQ $irq has affinity $aff, expected 3"
  done
  for f in /proc/irq/[0-9]*/smp_affinity_list; do
    irq=$(basename "$(dirname "$f")")
    grep -qw "$irq" <<<"$irqs" && continue
    aff=$(cat "$f")
    in_list "$aff" 3 || continue
    # The kernel refuses to move managed IRQs (and the timer): kvmtune names those.
    grep -qw "$irq" <<<"$refused" || others="$others $irq($aff)"
  done
  [ -z "$others" ] || fail "$1: movable IRQs still allowed on CPU 3:$others"
}
refused=$(kvmtune status | sed -n 's/.*refused by the kernel[^:]*: //p')
note "IRQs the kernel refuses to move: $refused"
check_irqs "at started"
# Two of irqbalance's rebalancing rounds (10 s each): an observation window over which the
# invariant must hold, sampled every second (not a wait for a condition).
end=$(( $(date +%s) + 21 ))
while [ "$(date +%s)" -lt "$end" ]; do
  check_irqs "while irqbalance runs"
  sleep 1
done
note "device IRQs stayed on CPU 3 and others off it for 21 s of irqbalance"
# Two rounds have passed: irqbalance's own answer has CPU 3 banned.
banned_vm=$(printf '%08x' $(( 0x$banned0 | 8 )))
banned=$(irqbalance_banned)
[ "$banned" = "$banned_vm" ] || fail "irqbalance banned '$banned' while the VM runs, not its own '$banned0' and CPU 3"

pid0=$(irqbalance_pid)
t_restart=$(date +%s)
systemctl restart irqbalance.service
restarted() { local pid; pid=$(irqbalance_pid); [ -n "$pid" ] && [ "$pid" != "$pid0" ] && [ "$(irqbalance_banned)" != "" ]; }
wait_for 20 "irqbalance (pid $pid0) did not come back as another process after a restart" restarted
note "irqbalance restarted: pid $pid0 -> $(irqbalance_pid), banned '$(irqbalance_banned)'"
# The watcher's full look comes within 15 s, irqbalance's next round within 10 s more.
wait_for 45 "the restarted irqbalance is not banned from CPU 3 again ('$banned_vm')" irqbalance_banned_is "$banned_vm"
journalctl -q -u kvmtune-watch.service --since "@$t_restart" | grep -q "irqbalance banned CPUs" \
  || fail "the watcher's log does not say it banned the restarted irqbalance: $(journalctl -q -u kvmtune-watch.service | tail -3)"
note "watcher: $(journalctl -q -u kvmtune-watch.service --since "@$t_restart" | grep "irqbalance banned CPUs" | tail -1)"
stop hv-vfio
# irqbalance applies a `settings cpus` at its next rescan, at the start of its next 10 s round.
wait_for 25 "irqbalance does not have its own banned CPUs back ('$banned0')" irqbalance_banned_is "$banned0"
[ "$(cat /proc/irq/default_smp_affinity)" = "$default0" ] || fail "default_smp_affinity $(cat /proc/irq/default_smp_affinity), was $default0"
