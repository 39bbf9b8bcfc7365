# topologies: 2node-6.12
# kvmtune run --isolate 2-3 on cgroup v2 without systemd, on a kernel with isolated partitions
# (6.12): `auto` takes the partition method. kvmtune's own cgroup kvmtune.isolated becomes an
# isolated partition of CPUs 2-3 holding the QEMU stand-in; no host process is moved, yet each
# (one started later too) may run only on 0-1, and the root's cpuset.cpus.isolated reads 2-3;
# `kvmtune status` names the method and why. A kernel thread pinned to CPU 1 with taskset stays
# there; one pinned to CPU 3 runs on 0-1 meanwhile and is on CPU 3 again after, as is one the
# kernel bound to one CPU
# (irq/9-acpi on CPU 1): when the partition goes, 6.12 gives the root's kernel threads every
# CPU, within a taskset pin but not within the kernel's own binding, so kvmtune notes and puts
# back every kernel thread not bound by the kernel for good. After kill -TERM everything is as
# before.
# Then an operator's partition holds CPUs 0-1: the kernel cannot make 2-3 an isolated partition
# as well (the root cgroup would keep no CPU); kvmtune run fails with the kernel's reason, in
# one line, and leaves everything as it was.
. /tests/lib.sh
. /tests/isolation.sh
trap 'iso_cleanup; admin_gone' EXIT
OURS=$CG/kvmtune.isolated
ADMIN=$CG/kt-admin
admin_gone() {
  [ -d $ADMIN ] || return 0
  echo member > $ADMIN/cpuset.cpus.partition 2>/dev/null
  echo > $ADMIN/cpuset.cpus.exclusive 2>/dev/null
  rmdir $ADMIN
}

[ -e $CG/cpuset.cpus.isolated ] || fail "harness: this kernel ($(uname -r)) has no $CG/cpuset.cpus.isolated"
# (Every `sleep 600` below is a workload that runs until the scenario ends it by PID, not a
# wait: waits go through wait_until.)
taskset -p -c 0-3 $$ >/dev/null
for d in $CG/kt-qemu-node*; do [ -d "$d" ] && rmdir "$d"; done
grep -qw cpuset $CG/cgroup.subtree_control && echo -cpuset > $CG/cgroup.subtree_control

iso_start "host process" sleep 600; host=$ISO_PID
iso_policy 0-1
iso_pin_kthread 1; kpin1=$KPIN
iso_pin_kthread 3; kpin3=$KPIN
iso_snapshot /tmp/base

# (kvmtune run adds `-name guest=s19-run`, which the shell takes as its $0 and $1.)
taskset -c 0-3 "$KT" run --name s19-run --isolate 2-3 -- sh -c 'exec sleep 600' > /tmp/run.log 2>&1 &
run=$!
ISO_PIDS="$ISO_PIDS $run"
running() {
  qemu=$(grep -l "^PPid:[[:space:]]*$run\$" /proc/[0-9]*/status 2>/dev/null | head -1 | cut -d/ -f3)
  [ -n "$qemu" ] && grep -qs '"phase": "running"' "$STATE_DIR/ledger.json"
}
wait_until 10 running || fail "kvmtune run started no VM in 10 s: $(cat /tmp/run.log)"
note "kvmtune run: pid $run, its QEMU stand-in: pid $qemu"
expect_eq "$(cat $OURS/cpuset.cpus.partition)" isolated "while running: $OURS/cpuset.cpus.partition"
expect_eq "$(cat $OURS/cpuset.cpus.effective)" 2-3 "while running: $OURS/cpuset.cpus.effective"
expect_eq "$(cat $CG/cpuset.cpus.isolated)" 2-3 "while running: $CG/cpuset.cpus.isolated"
expect_eq "$(cgroup_of $qemu)" /kvmtune.isolated "while running: cgroup of the QEMU stand-in"
expect_eq "$(cpus_of $qemu)" 2-3 "while running: CPUs of the QEMU stand-in"
# No process was moved: the kernel took the CPUs from the root cgroup's tasks.
expect_eq "$(cgroup_of $host)" / "while running: cgroup of the host process"
expect_eq "$(cpus_of $host)" 0-1 "while running: CPUs of the host process"
expect_eq "$(cgroup_of $run)" / "while running: cgroup of kvmtune run"
expect_eq "$(cpus_of $run)" 0-1 "while running: CPUs of kvmtune run"
expect_eq "$(cpus_of $kpin1)" 1 "while running: CPUs of kernel thread $kpin1, pinned to CPU 1"
expect_eq "$(cpus_of $kpin3)" 0-1 "while running: CPUs of kernel thread $kpin3, pinned to CPU 3"
[ -d $HK_CG ] && fail "the partition method made $HK_CG"
taskset -c 0-3 sleep 600 & late=$!
ISO_PIDS="$ISO_PIDS $late"
expect_eq "$(cpus_of $late)" 0-1 "a process started later (taskset -c 0-3): its CPUs"
"$KT" status > /tmp/status.out 2>&1
grep -q "method chosen: auto: the kernel offers isolated partitions" /tmp/status.out \
  || fail "status does not say why the partition method was chosen: $(tr '\n' ';' < /tmp/status.out)"
grep -q "every other host task is confined" /tmp/status.out \
  || fail "status does not find every host task off CPUs 2-3: $(tr '\n' ';' < /tmp/status.out)"

kill $late; wait $late 2>/dev/null
kill -TERM $run
wait $run
rc=$?
expect_eq "$rc" 143 "exit status of kvmtune run after its QEMU stand-in ended by SIGTERM"
kill -0 $qemu 2>/dev/null && fail "the QEMU stand-in $qemu still runs"
RELEASED_VMS="$RELEASED_VMS s19-run"
iso_expect_same /tmp/base "after kvmtune run ended"
check_state_clean

# An operator's partition of CPUs 0-1: a partition of 2-3 would leave the root cgroup no CPU.
echo +cpuset > $CG/cgroup.subtree_control
mkdir $ADMIN
echo 0-1 > $ADMIN/cpuset.cpus.exclusive || fail "harness: cannot give $ADMIN CPUs 0-1"
echo root > $ADMIN/cpuset.cpus.partition
expect_eq "$(cat $ADMIN/cpuset.cpus.partition)" root "harness: $ADMIN/cpuset.cpus.partition"
iso_snapshot /tmp/base2
if "$KT" run --name s19-bad --isolate 2-3 -- sh -c 'exec sleep 600' > /tmp/bad.log 2>&1; then
  fail "kvmtune run started a VM whose partition the kernel cannot make: $(cat /tmp/bad.log)"
fi
note "kvmtune run refused: $(cat /tmp/bad.log)"
expect_eq "$(wc -l < /tmp/bad.log | tr -d ' ')" 1 "lines kvmtune run printed"
grep -q "the kernel does not make CPUs 2-3 an isolated partition: .* reads 'isolated invalid'" /tmp/bad.log \
  || fail "kvmtune run does not give the kernel's reason: $(cat /tmp/bad.log)"
iso_expect_same /tmp/base2 "after the refused start"
check_state_clean
