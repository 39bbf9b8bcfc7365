#!/bin/bash
# Undo the shield: tasks back to the root cpuset, the "system" cpuset removed.
source "$(dirname "$0")/../../kvm.conf"
R=${BENCH_ROOT:-}
CS=$R/sys/fs/cgroup/cpuset

for pid in $(cat "$CS/system/tasks"); do
  echo "$pid" > "$CS/tasks" 2>/dev/null || true
done
rmdir "$CS/system" 2>/dev/null || true
echo "$ALL_MASK" > "$R/sys/devices/virtual/workqueue/cpumask"
