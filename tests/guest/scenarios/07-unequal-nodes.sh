# topologies: 3node
# Three nodes of 2, 3 and 1 GiB (node 2 is the smallest).
# (a) A VM bound to node 2 grows only node 2's pool; release restores.
# (b) A VM interleaved over 0-2 grows each node by a third; release restores.
# (c) 1.5 GiB fits node 1 but not node 2: bound to node 2 it fails and changes nothing,
#     bound to node 1 it is reserved there.
. /tests/lib.sh

[ "$(nodes | wc -l)" = 3 ] || fail "harness: expected 3 NUMA nodes, have $(nodes | tr '\n' ' ')"
for n in 0 1 2; do note "node $n: cpus $(cat $NODE_SYS/node$n/cpulist), MemFree $(node_memfree_kb $n) kB"; done
save_snapshot /tmp/base

# (a) 256 MiB on node 2: 128 pages.
mkdom /tmp/small.xml s7-small 256 "" "$(strict 2)"
vm_prepare s7-small /tmp/small.xml
show_pools
expect_pool 2 $HP2M 128 "(a) after prepare"
expect_others_unchanged /tmp/base "(a) after prepare" "node2 2048kB"
vm_run s7-small /tmp/small.xml 2:$HP2M:128
vm_stop s7-small /tmp/small.xml
expect_snapshot /tmp/base "(a) after release"

# (b) 384 MiB interleaved over 0-2: 192 pages, 64 per node.
mkdom /tmp/il.xml s7-il3 384 "" "$(interleave 0-2)"
vm_prepare s7-il3 /tmp/il.xml
show_pools
for n in 0 1 2; do expect_pool $n $HP2M 64 "(b) after prepare"; done
vm_run s7-il3 /tmp/il.xml 0:$HP2M:64 1:$HP2M:64 2:$HP2M:64
vm_stop s7-il3 /tmp/il.xml
expect_snapshot /tmp/base "(b) after release"

# (c) 1536 MiB: more than node 2 has, well within node 1.
mkdom /tmp/big2.xml s7-big-on-2 1536 "" "$(strict 2)"
hook_fails s7-big-on-2 prepare begin - /tmp/big2.xml
expect_snapshot /tmp/base "(c) after the failed prepare on node 2"
hook_ok s7-big-on-2 stopped end - /tmp/big2.xml
hook_ok s7-big-on-2 release end failed /tmp/big2.xml
RELEASED_VMS="$RELEASED_VMS s7-big-on-2"
expect_snapshot /tmp/base "(c) after release end failed"
mkdom /tmp/big1.xml s7-big-on-1 1536 "" "$(strict 1)"
vm_prepare s7-big-on-1 /tmp/big1.xml
expect_pool 1 $HP2M 768 "(c) 1.5 GiB on node 1 after prepare"
expect_others_unchanged /tmp/base "(c) 1.5 GiB on node 1 after prepare" "node1 2048kB"
vm_run s7-big-on-1 /tmp/big1.xml 1:$HP2M:768
vm_stop s7-big-on-1 /tmp/big1.xml
expect_snapshot /tmp/base "(c) after release"
check_state_clean
