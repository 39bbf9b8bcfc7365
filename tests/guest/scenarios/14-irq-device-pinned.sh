# topologies: 2node
# A VM with its vCPU pinned to host CPU 3, the guest's virtio-rng (driver loaded, MSI-X
# vectors enabled) as its PCI passthrough device, <kvmtune:irq cpus="vcpus"/> and
# <kvmtune:isolate cpus="vcpus"/>, housekeeping 0-1. At `started` every IRQ of the device
# (MSI-X vectors and INTx line) has smp_affinity_list 3, and interrupts it raises land on CPU 3;
# every other IRQ that was allowed on CPU 3 is off it: what remains of its affinity (one IRQ set
# to 2-3 beforehand goes to 2), the housekeeping CPUs when nothing remains (one IRQ set to 3
# beforehand goes to [cpus] housekeeping, 0-1); an IRQ the kernel refuses to move is listed by `status` as managed;
# default_smp_affinity excludes CPU 3. `status` lists each device IRQ as pinned to 3. At
# release every smp_affinity_list and default_smp_affinity is exactly as before.
. /tests/lib.sh
. /tests/isolation.sh
. /tests/irq.sh
cleanup() { iso_cleanup; irq_cleanup; driver_unload >/dev/null 2>&1; return 0; }
trap cleanup EXIT

taskset -p -c 0-3 $$ >/dev/null
driver_loaded || driver_load
devirqs=$(dev_irqs)
note "device $DEV_BDF: IRQs [$devirqs] (MSI-X [$(dev_msi_irqs)], INTx $(cat $DEV/irq)), numa_node $(cat $DEV/numa_node)"
[ -n "$(dev_msi_irqs)" ] || fail "harness: the device has no MSI-X vectors with its driver loaded"

# Two IRQs that are not the device's get a narrower affinity first (as an admin or a driver may
# have set): one only CPU 3 (nothing remains: housekeeping), one CPUs 2-3 (2 remains).
only3=""; two3=""
for n in $(ls /proc/irq | grep -E '^[0-9]+$' | sort -n); do
  case " $devirqs " in *" $n "*) continue ;; esac
  [ -n "$only3" ] && [ -n "$two3" ] && break
  if [ -z "$only3" ]; then irq_set $n 3 && [ "$(cat /proc/irq/$n/smp_affinity_list)" = 3 ] && { only3=$n; continue; }; fi
  if [ -z "$two3" ]; then irq_set $n 2-3 && [ "$(cat /proc/irq/$n/smp_affinity_list)" = 2-3 ] && two3=$n; fi
done
[ -n "$only3" ] && [ -n "$two3" ] || fail "harness: found no IRQ that accepts affinity 3 and 2-3 (got '$only3' '$two3')"
note "IRQ $only3 set to CPU 3, IRQ $two3 set to CPUs 2-3"

iso_policy 0-1
# Where an IRQ goes when nothing of its affinity is left: where host tasks run (online minus
# isolated), not only the policy's never-isolated housekeeping CPUs.
nothing_left=0-2
irqdom /tmp/vm.xml s14-irq vcpus vcpus 3
iso_snapshot /tmp/base
irq_snapshot /tmp/base.irq
echo "before:"; sed 's/^/  /' /tmp/base.irq

vm_prepare s14-irq /tmp/vm.xml
vm_run s14-irq /tmp/vm.xml
[ "$(dev_irqs)" = "$devirqs" ] || fail "harness: the device's IRQs changed from [$devirqs] to [$(dev_irqs)]"
irq_expect_placed /tmp/base.irq s14-irq "$devirqs" 3 3 $nothing_left "after started"
mask=$(cat /proc/irq/default_smp_affinity)
[ $(( 0x$mask & 8 )) = 0 ] || fail "after started: default_smp_affinity $mask includes CPU 3"
dev_expect_fired "$(dev_msi_irqs)" 3 "after started"
# An `irq-watch --once` pass changes nothing more.
"$KT" irq-watch --once > /tmp/watch.out 2>&1 || fail "after started: kvmtune irq-watch --once exited $?: $(head -1 /tmp/watch.out)"
irq_expect_placed /tmp/base.irq s14-irq "$devirqs" 3 3 $nothing_left "after irq-watch --once"

vm_stop s14-irq /tmp/vm.xml destroyed
irq_expect_same /tmp/base.irq "after release"
iso_expect_same /tmp/base "after release"
"$KT" status > /tmp/status.out 2>&1
grep -E '^  IRQ |^IRQs|refused' /tmp/status.out && fail "after release: kvmtune status still lists IRQs: $(grep -E '^  IRQ |^IRQs|refused' /tmp/status.out | tr '\n' ';')"
check_state_clean
