# topologies: 2node
# A pool the admin set beforehand (16 pages on node 1) is used, not doubled:
# a VM needing 16 pages adds nothing and after release the pool is still 16;
# a VM needing 24 adds 8 and after release the pool is 16 again.
. /tests/lib.sh

set_pool 1 $HP2M 16
[ "$(hp 1 $HP2M nr_hugepages)" = 16 ] || fail "harness: could not set node 1's pool to 16"
save_snapshot /tmp/base

mkdom /tmp/fits.xml s6-fits 32 "" "$(strict 1)"      # 16 pages
vm_prepare s6-fits /tmp/fits.xml
expect_pool 1 $HP2M 16 "16-page VM after prepare"
expect_snapshot /tmp/base "16-page VM after prepare"
vm_run s6-fits /tmp/fits.xml 1:$HP2M:16
expect_pool 1 $HP2M 16 "16-page VM running"
vm_stop s6-fits /tmp/fits.xml
expect_snapshot /tmp/base "16-page VM released"
expect_pool 1 $HP2M 16 "16-page VM released"

mkdom /tmp/more.xml s6-more 48 "" "$(strict 1)"      # 24 pages
vm_prepare s6-more /tmp/more.xml
expect_pool 1 $HP2M 24 "24-page VM after prepare"
expect_others_unchanged /tmp/base "24-page VM after prepare" "node1 2048kB"
vm_run s6-more /tmp/more.xml 1:$HP2M:24
vm_stop s6-more /tmp/more.xml
expect_snapshot /tmp/base "24-page VM released"
check_state_clean
