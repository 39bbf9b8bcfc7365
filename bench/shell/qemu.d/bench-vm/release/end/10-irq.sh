#!/bin/bash
# IRQs back on every CPU.
source "$(dirname "$0")/../../kvm.conf"
R=${BENCH_ROOT:-}

for f in "$R"/proc/irq/*/smp_affinity_list; do
  echo "$ALL_CPUS" > "$f" 2>/dev/null || true
done
echo "$ALL_MASK" > "$R/proc/irq/default_smp_affinity"
