#!/bin/bash
# Give the hugepages back.
R=${BENCH_ROOT:-}
echo 0 > "$R/proc/sys/vm/nr_hugepages"
