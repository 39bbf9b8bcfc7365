# topologies: 2node
# 1 GiB pages on node 1: a 1 GiB VM grows node 1's 1 GiB pool by one page; the 2 MiB pools and
# node 0 stay as they were; release restores.
. /tests/lib.sh

have_size $HP1G || fail "harness: the guest has no 1 GiB hugepages (CPU without pdpe1gb?)"
mkdom /tmp/vm.xml s3-1g 1024 "<page size='1' unit='GiB'/>" "$(strict 1)"
save_snapshot /tmp/base
nr1=$(hp 1 $HP1G nr_hugepages)

vm_prepare s3-1g /tmp/vm.xml
show_pools
expect_pool 1 $HP1G $((nr1 + 1)) "after prepare"
expect_others_unchanged /tmp/base "after prepare" "node1 1048576kB"

vm_run s3-1g /tmp/vm.xml 1:$HP1G:1
vm_stop s3-1g /tmp/vm.xml
expect_snapshot /tmp/base "after release"
check_state_clean
