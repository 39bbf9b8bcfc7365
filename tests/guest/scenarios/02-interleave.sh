# topologies: 2node
# Interleave over both nodes: each node's 2 MiB pool grows by half the VM's need.
. /tests/lib.sh

mkdom /tmp/vm.xml s2-interleave 512 "" "$(interleave 0-1)"   # 256 pages: 128 per node
save_snapshot /tmp/base
nr0=$(hp 0 $HP2M nr_hugepages); nr1=$(hp 1 $HP2M nr_hugepages)

vm_prepare s2-interleave /tmp/vm.xml
show_pools
expect_pool 0 $HP2M $((nr0 + 128)) "after prepare"
expect_pool 1 $HP2M $((nr1 + 128)) "after prepare"

vm_run s2-interleave /tmp/vm.xml 0:$HP2M:128 1:$HP2M:128
vm_stop s2-interleave /tmp/vm.xml
expect_snapshot /tmp/base "after release"
check_state_clean
