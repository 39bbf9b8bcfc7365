# topologies: 2node 2node-6.12
# A VM with vCPUs pinned to host CPUs 2-3 and <kvmtune:isolate cpus="vcpus"/>, housekeeping 0-1,
# cgroup v2 without systemd, cpuset not yet enabled: at prepare every host process leaves the
# root cgroup for kvmtune.housekeeping (CPUs 0-1), a service's top-level cgroup is confined where
# it is, movable kernel threads and the workqueue masks go to 0-1 (one pinned to CPU 1 with
# taskset stays there, one pinned to 2-3 goes to 0-1); libvirt's machine.slice (and
# the pinning of what runs there) and the virtqemud daemon are left alone. At release everything
# is as before: each task's cgroup and affinity (pinned ones too), the cgroup dirs, the masks
# and cgroup.subtree_control.
. /tests/lib.sh
. /tests/isolation.sh
trap iso_cleanup EXIT

# This shell may run anywhere, so that confinement shows in what it and its children get.
taskset -p -c 0-3 $$ >/dev/null
# Start from a root without the cpuset controller (hugepage scenarios leave theirs enabled).
for d in $CG/kt-qemu-node*; do [ -d "$d" ] && rmdir "$d"; done
grep -qw cpuset $CG/cgroup.subtree_control && echo -cpuset > $CG/cgroup.subtree_control
grep -qw cpuset $CG/cgroup.subtree_control && fail "harness: cannot disable cpuset in $CG/cgroup.subtree_control"

# Host processes: one in the root cgroup, one in a service's cgroup (as a supervisor would
# place it), one pinned to CPU 1; the virtualization daemon; a stand-in for a VM's QEMU in
# libvirt's cgroup, pinned to CPU 3 as libvirt pins a vCPU thread (sched_setaffinity).
iso_start "host process" sleep 600; host=$ISO_PID
iso_start "pinned host process" taskset -c 1 sleep 600; pinned=$ISO_PID
mkdir $CG/kt-svc && ISO_CGROUPS="$CG/kt-svc"
iso_start "service process" sleep 600; svc=$ISO_PID
echo $svc > $CG/kt-svc/cgroup.procs || fail "harness: cannot move $svc into kt-svc"
mkfifo /tmp/kt-daemon.fifo
printf '#!/bin/sh\nexec 3<>/tmp/kt-daemon.fifo\nread x <&3\n' > /tmp/virtqemud
chmod 755 /tmp/virtqemud
iso_start "daemon" /tmp/virtqemud; daemon=$ISO_PID
mkdir -p $CG/machine.slice/vm-x && ISO_CGROUPS="$CG/machine.slice/vm-x $CG/machine.slice $ISO_CGROUPS"
iso_start "VM process" taskset -c 3 sleep 600; vmproc=$ISO_PID
echo $vmproc > $CG/machine.slice/vm-x/cgroup.procs || fail "harness: cannot move $vmproc into machine.slice/vm-x"
# The snapshot below is of these processes as they run: each one has exec'd its program (after
# taskset pinned it, for the pinned ones), so its comm is the program's.
comm_of() { sed -n 's/^Name:[[:space:]]*//p' "/proc/$1/status"; }
all_started() {
  for p in "$host" "$pinned" "$svc" "$vmproc"; do [ "$(comm_of "$p")" = sleep ] || return 1; done
  [ "$(comm_of "$daemon")" = virtqemud ]
}
wait_until 10 all_started ||
  fail "harness: the host processes did not all exec their programs within 10 s (comm: $(for p in "$host" "$pinned" "$svc" "$vmproc" "$daemon"; do printf '%s=%s ' "$p" "$(comm_of "$p")"; done))"
expect_eq "$(comm_of "$daemon")" virtqemud "harness: the daemon stand-in's comm"

iso_pin_kthread 1; kpin1=$KPIN
iso_pin_kthread 2-3; kpin23=$KPIN
iso_policy 0-1
isodom /tmp/vm.xml s11-isolated vcpus 2 3
iso_snapshot /tmp/base
echo "before:"; sed 's/^/  /' /tmp/base.files
grep -v '|P|' /tmp/base.tasks | sed 's/^/  /'

vm_prepare s11-isolated /tmp/vm.xml
iso_expect_isolated 0-1 2-3 "after prepare" $daemon $vmproc
expect_eq "$(cgroup_of $host)" /kvmtune.housekeeping "after prepare: cgroup of the host process"
expect_eq "$(cpus_of $host)" 0-1 "after prepare: CPUs of the host process"
note "after prepare: the host process pinned to CPU 1 is allowed on CPUs $(cpus_of $pinned)"
expect_eq "$(cgroup_of $svc)" /kt-svc "after prepare: cgroup of the service process"
expect_eq "$(cat $CG/kt-svc/cpuset.cpus)" 0-1 "after prepare: kt-svc/cpuset.cpus"
expect_eq "$(cpus_of $svc)" 0-1 "after prepare: CPUs of the service process"
expect_eq "$(cpus_of $kpin1)" 1 "after prepare: CPUs of kernel thread $kpin1, pinned to CPU 1"
expect_eq "$(cpus_of $kpin23)" 0-1 "after prepare: CPUs of kernel thread $kpin23, pinned to CPUs 2-3"
expect_eq "$(cgroup_of $daemon)" / "after prepare: cgroup of virtqemud"
expect_eq "$(cpus_of $daemon)" 0-3 "after prepare: CPUs of virtqemud"
expect_eq "$(cgroup_of $vmproc)" /machine.slice/vm-x "after prepare: cgroup of the VM process"
expect_eq "$(cpus_of $vmproc)" 3 "after prepare: CPUs of the VM process (pinned to CPU 3, as libvirt pins a vCPU thread)"
grep -qw cpuset $CG/cgroup.subtree_control || fail "after prepare: cpuset not enabled in $CG/cgroup.subtree_control"
[ -e $CG/machine.slice/cpuset.cpus ] && expect_eq "$(cat $CG/machine.slice/cpuset.cpus)" "" "after prepare: machine.slice/cpuset.cpus"
# status: the daemon is the only host task still allowed on 2-3; per-CPU kernel threads counted.
grep -F 'still allowed:' /tmp/status.out > /tmp/still || true
expect_eq "$(cat /tmp/still)" "  still allowed: pid $daemon \"virtqemud\" on CPUs 0-3 (virtualization daemon, kept unconfined)" "after prepare: status 'still allowed' lines"
iso_tasks > /tmp/t1
percpu=$(count_on P 2-3 /tmp/t1)
said=$(sed -n 's/.*per-CPU kernel threads on isolated CPUs (cannot move): //p' /tmp/status.out)
note "per-CPU kernel threads allowed on 2-3: $percpu here, status says '$said'"
[ -n "$said" ] && [ "$said" -gt 0 ] || fail "after prepare: status counts '$said' per-CPU kernel threads on isolated CPUs (there are $percpu)"

vm_run s11-isolated /tmp/vm.xml
iso_expect_isolated 0-1 2-3 "after started" $daemon $vmproc

vm_stop s11-isolated /tmp/vm.xml destroyed
[ -d $HK_CG ] && fail "after release: $HK_CG still exists"
iso_expect_same /tmp/base "after release"
"$KT" status > /tmp/status.out 2>&1
grep -qx 'Isolation: none' /tmp/status.out || fail "after release: kvmtune status does not say 'Isolation: none': $(grep -i isolat /tmp/status.out | tr '\n' ';')"
check_state_clean
