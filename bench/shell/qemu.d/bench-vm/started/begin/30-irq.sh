#!/bin/bash
# IRQs: everything to the host CPUs, the passthrough device's vectors to the VM's CPUs.
source "$(dirname "$0")/../../kvm.conf"
R=${BENCH_ROOT:-}

for f in "$R"/proc/irq/*/smp_affinity_list; do
  echo "$HOST_CPUS" > "$f" 2>/dev/null || true
done
echo "$HOST_MASK" > "$R/proc/irq/default_smp_affinity"
for irq in $(ls "$R/sys/bus/pci/devices/$DEVICE/msi_irqs"); do
  echo "$VM_CPUS" > "$R/proc/irq/$irq/smp_affinity_list"
done
