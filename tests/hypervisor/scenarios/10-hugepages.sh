# Hugepages by node under the guest's own libvirtd, as in the libvirt tier: strict on node 1,
# interleave over both nodes, and guest NUMA cells bound with <memnode> (cell 0 on node 1,
# cell 1 on node 0). Each VM's pages are on its node(s) while it runs; every pool is back after.
. /hv/guest/lib.sh
save_state /tmp/base
b0=$(hp 0 2048 nr_hugepages); b1=$(hp 1 2048 nr_hugepages)

define hv-strict 10 huge=64 node=1
start hv-strict
[ "$(hp 1 2048 nr_hugepages)" -ge $((b1 + 32)) ] || fail "strict: node 1 pool $(hp 1 2048 nr_hugepages), expected $b1 + 32"
[ "$(hp 0 2048 nr_hugepages)" = "$b0" ] || fail "strict: node 0's pool changed ($b0 -> $(hp 0 2048 nr_hugepages))"
stop hv-strict
wait_for 10 "strict: pools not back" pool_is 1 2048 "$b1"

# split_vm NAME ID SED WHAT: a 64 MiB domain edited by SED, whose pages must be spread 16/16
# over both nodes while it runs.
split_vm() {
  domain_xml "$1" "$2" huge=64 > "/tmp/$1.xml"
  sed -i "$3" "/tmp/$1.xml"
  virsh_ define "/tmp/$1.xml" >/dev/null || fail "define $1"; DEFINED+=("$1")
  start "$1"
  [ "$(hp 0 2048 nr_hugepages)" -ge $((b0 + 16)) ] && [ "$(hp 1 2048 nr_hugepages)" -ge $((b1 + 16)) ] ||
    fail "$4: pools $(hp 0 2048 nr_hugepages)/$(hp 1 2048 nr_hugepages), expected $b0+16/$b1+16"
  stop "$1"
}
# interleave: 64 MiB spread evenly, 16 pages per node.
split_vm hv-inter 11 "s|<os>|<numatune><memory mode='interleave' nodeset='0-1'/></numatune><os>|" interleave
# Two guest cells: cell 0 (32 MiB) on node 1, cell 1 (32 MiB) on node 0.
split_vm hv-cells 12 "s|<vcpu placement='static'>1</vcpu>|<vcpu placement='static'>2</vcpu>|; s|<os>|<numatune><memory mode='strict' nodeset='0-1'/><memnode cellid='0' mode='strict' nodeset='1'/><memnode cellid='1' mode='strict' nodeset='0'/></numatune><cpu><numa><cell id='0' cpus='0' memory='32' unit='MiB'/><cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu><os>|" "memnode cells"
wait_for 10 "node 0 pool not back after the last VM" pool_is 0 2048 "$b0"
wait_for 10 "node 1 pool not back after the last VM" pool_is 1 2048 "$b1"
expect_state /tmp/base "after the hugepage VMs"
