# topologies: 2node
# Guest NUMA cells bound per cell with <memnode>: cell 0 (128 MiB) on node 0, cell 1 (256 MiB)
# on node 1, with an explicit 2048 KiB page size. The <memory nodeset='0-1'> default must not
# win over the per-cell binding: node 0 grows by 64 pages, node 1 by 128.
. /tests/lib.sh

cells="<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model><numa>
    <cell id='0' cpus='0' memory='131072' unit='KiB'/>
    <cell id='1' cpus='1' memory='262144' unit='KiB'/>
  </numa></cpu>"
tune="<numatune><memory mode='strict' nodeset='0-1'/>
    <memnode cellid='0' mode='strict' nodeset='0'/>
    <memnode cellid='1' mode='strict' nodeset='1'/></numatune>"
mkdom /tmp/vm.xml s8-cells 384 "<page size='2048' unit='KiB'/>" "$tune" "$cells"
save_snapshot /tmp/base

vm_prepare s8-cells /tmp/vm.xml
show_pools
expect_pool 0 $HP2M 64 "after prepare (cell 0 -> node 0)"
expect_pool 1 $HP2M 128 "after prepare (cell 1 -> node 1)"
expect_others_unchanged /tmp/base "after prepare" "node0 2048kB" "node1 2048kB"
vm_run s8-cells /tmp/vm.xml 0:$HP2M:64 1:$HP2M:128
vm_stop s8-cells /tmp/vm.xml
expect_snapshot /tmp/base "after release"
check_state_clean
