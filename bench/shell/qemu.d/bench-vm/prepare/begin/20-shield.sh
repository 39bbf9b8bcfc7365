#!/bin/bash
# Shield the VM's CPUs (what `cset shield --kthread=on` does on cgroup v1): a "system" cpuset
# on the host CPUs takes every task of the root cpuset; new unbound work stays there too.
source "$(dirname "$0")/../../kvm.conf"
R=${BENCH_ROOT:-}
CS=$R/sys/fs/cgroup/cpuset

mkdir -p "$CS/system"
echo "$HOST_CPUS" > "$CS/system/cpuset.cpus"
cat "$CS/cpuset.mems" > "$CS/system/cpuset.mems"
for pid in $(cat "$CS/tasks"); do
  echo "$pid" > "$CS/system/tasks" 2>/dev/null || true
done
echo "$HOST_MASK" > "$R/sys/devices/virtual/workqueue/cpumask"
