#!/bin/bash
# Reserve the VM's memory as hugepages: the global pool, caches dropped and memory compacted,
# retried until the count is reached.
source "$(dirname "$0")/../../kvm.conf"
R=${BENCH_ROOT:-}
page_kb=$(grep Hugepagesize "$R/proc/meminfo" | awk '{print $2}')
pages=$((VM_MEMORY * 1024 / page_kb))

echo 3 > "$R/proc/sys/vm/drop_caches"
echo 1 > "$R/proc/sys/vm/compact_memory"
echo "$pages" > "$R/proc/sys/vm/nr_hugepages"
got=$(cat "$R/proc/sys/vm/nr_hugepages")
tries=0
while [ "$got" -ne "$pages" ] && [ "$tries" -lt 1000 ]; do
  echo 1 > "$R/proc/sys/vm/compact_memory"
  echo "$pages" > "$R/proc/sys/vm/nr_hugepages"
  got=$(cat "$R/proc/sys/vm/nr_hugepages")
  tries=$((tries + 1))
done
if [ "$got" -ne "$pages" ]; then
  echo "only $got of $pages hugepages" >&2
  echo 0 > "$R/proc/sys/vm/nr_hugepages"
  exit 1
fi
