# topologies: 2node
# A VM bound to node 1 (strict) grows node 1's 2 MiB pool by exactly its need; node 0 and the
# global pool setting are untouched; release restores every pool exactly.
. /tests/lib.sh

mkdom /tmp/vm.xml s1-strict 256 "" "$(strict 1)"    # 256 MiB = 128 x 2 MiB
save_snapshot /tmp/base
nr1=$(hp 1 $HP2M nr_hugepages)

vm_prepare s1-strict /tmp/vm.xml
show_pools
expect_pool 1 $HP2M $((nr1 + 128)) "after prepare"
[ "$(hp 1 $HP2M free_hugepages)" -ge 128 ] || fail "after prepare: node 1 has fewer than 128 free pages"
expect_others_unchanged /tmp/base "after prepare" "node1 2048kB"

vm_run s1-strict /tmp/vm.xml 1:$HP2M:128
expect_pool 1 $HP2M $((nr1 + 128)) "after started"
expect_others_unchanged /tmp/base "after started" "node1 2048kB"

vm_stop s1-strict /tmp/vm.xml destroyed
expect_snapshot /tmp/base "after release"
check_state_clean
