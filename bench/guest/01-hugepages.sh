#!/bin/sh
# topologies: 2node 3node
# Section 2 of BENCHMARKS.md in the test guest (Debian's 6.1 kernel under QEMU/TCG): node 1
# fragmented by bench/fragment.c (page cache from brd, a RAM disk whose unwritten blocks cost
# no memory), then pages reserved for a VM bound to node 1 by each method of
# bench/hugepages-trial.sh: 512 MiB and 1 GiB of 2 MiB pages with 80 % of the node's free
# memory touched, one 1 GiB page with 80 % and with 40 %. One "@@BENCH {json}" line per trial.
T=/tests/files
modprobe brd rd_nr=1 rd_size=4194304 || { echo "cannot load brd" >"$KT_REASON"; exit 1; }
cpus=$(cat /sys/devices/system/node/node1/cpulist)
free=$(awk '/MemFree:/{print int($4 / 1024)}' /sys/devices/system/node/node1/meminfo)
total=$(awk '/MemTotal:/{print int($4 / 1024)}' /sys/devices/system/node/node1/meminfo)
mkdir -p /tmp/hp
for case in 2048:256:80 2048:512:80 1048576:1:80 1048576:1:40; do
  size=${case%%:*}
  rest=${case#*:}
  pages=${rest%:*}
  pct=${rest#*:}
  frag=$((free * pct / 100))
  for m in kvmtune script plain; do
    row=$(HP_METHOD=$m HP_NODE=1 HP_CPUS=$cpus HP_SIZE_KB=$size HP_PAGES=$pages \
      HP_FRAG_MIB=$frag HP_CACHE=/dev/ram0 HP_TOOLS=$T HP_KVMTUNE=/usr/bin/kvmtune \
      HP_WORK=/tmp/hp sh $T/hugepages-trial.sh) || { echo "trial $m $case failed" >"$KT_REASON"; exit 1; }
    echo "@@BENCH {\"topo\": \"$KT_TOPO\", \"node_mib\": $total, \"frag_pct\": $pct, \"frag_mib\": $frag, \"trial\": $row}"
  done
done
rmmod brd
