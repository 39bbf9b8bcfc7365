# topologies: 2node
# libvirt runs the hooks of different VMs in parallel: four VMs on node 1 (8, 16, 24, 32 pages)
# prepare at the same time, and later release at the same time. kvmtune's host-wide lock must
# serialise them: after the prepares node 1 grew by exactly the sum, after the releases every
# pool is back to the start.
. /tests/lib.sh

save_snapshot /tmp/base
vms="1 2 3 4"
for i in $vms; do mkdom /tmp/s10-$i.xml s10-vm$i $((i * 16)) "" "$(strict 1)"; done

parallel_hook() {   # parallel_hook OP SUBOP EXTRA: the event for every VM at once
  for i in $vms; do
    ( taskset -c "$(node_cpu 0)" "$KT" hook s10-vm$i "$1" "$2" "$3" < /tmp/s10-$i.xml \
        > /tmp/s10-$i.out 2> /tmp/s10-$i.err; echo $? > /tmp/s10-$i.rc ) &
  done
  wait
  for i in $vms; do
    echo "\$ kvmtune hook s10-vm$i $1 $2 $3 (in parallel) -> exit $(cat /tmp/s10-$i.rc)"
    sed 's/^/  stderr: /' /tmp/s10-$i.err
    [ "$(cat /tmp/s10-$i.rc)" = 0 ] || fail "parallel $1 of s10-vm$i exited $(cat /tmp/s10-$i.rc): $(head -1 /tmp/s10-$i.err)"
    [ -s /tmp/s10-$i.out ] && fail "parallel $1 of s10-vm$i wrote to stdout"
  done
  return 0
}

parallel_hook prepare begin -
show_pools
expect_pool 1 $HP2M $((8 + 16 + 24 + 32)) "after 4 parallel prepares"
expect_others_unchanged /tmp/base "after 4 parallel prepares" "node1 2048kB"
for i in $vms; do vm_run s10-vm$i /tmp/s10-$i.xml 1:$HP2M:$((i * 8)); done
note "state dir while 4 VMs run: $(find "$STATE_DIR" -type f | sort | tr '\n' ' ')"
for i in $vms; do qemu_exit s10-vm$i; done
parallel_hook stopped end -
parallel_hook release end destroyed
RELEASED_VMS="s10-vm1 s10-vm2 s10-vm3 s10-vm4"
expect_snapshot /tmp/base "after 4 parallel releases"
check_state_clean
