# topologies: 2node
# kvmtune run --isolate 2-3 on cgroup v2 without systemd: a stand-in for QEMU (a shell that
# becomes sleep, started by kvmtune run from the root cgroup) runs on CPUs 2-3 in the root
# cgroup through prepare and the started sweep, which confines every other host process
# (kvmtune run itself included) to kvmtune.housekeeping on 0-1. kill -TERM on kvmtune run
# reaches the stand-in, whose end by SIGTERM is kvmtune's exit status (143); then everything
# is as before.
. /tests/lib.sh
. /tests/isolation.sh
trap iso_cleanup EXIT

taskset -p -c 0-3 $$ >/dev/null
for d in $CG/kt-qemu-node*; do [ -d "$d" ] && rmdir "$d"; done
grep -qw cpuset $CG/cgroup.subtree_control && echo -cpuset > $CG/cgroup.subtree_control

iso_start "host process" sleep 600; host=$ISO_PID
iso_policy 0-1
iso_snapshot /tmp/base

# (kvmtune run adds `-name guest=s17-run`, which the shell takes as its $0 and $1.)
taskset -c 0-3 "$KT" run --name s17-run --isolate 2-3 -- sh -c 'exec sleep 600' > /tmp/run.log 2>&1 &
run=$!
ISO_PIDS="$ISO_PIDS $run"
qemu=
i=0
while [ $i -lt 100 ]; do
  qemu=$(grep -l "^PPid:[[:space:]]*$run\$" /proc/[0-9]*/status 2>/dev/null | head -1 | cut -d/ -f3)
  [ -n "$qemu" ] && grep -qs '"phase": "running"' "$STATE_DIR/ledger.json" \
    && [ "$(cgroup_of $run)" = /kvmtune.housekeeping ] && break
  i=$((i + 1))
  sleep 0.1
done
[ -n "$qemu" ] || fail "kvmtune run started no child in 10 s: $(cat /tmp/run.log)"
note "kvmtune run: pid $run, its QEMU stand-in: pid $qemu"
grep -qs "\"pid\": $qemu" "$STATE_DIR/ledger.json" || fail "the ledger does not record the stand-in's pid $qemu: $(cat "$STATE_DIR/ledger.json")"
expect_eq "$(cgroup_of $qemu)" / "while running: cgroup of the QEMU stand-in"
expect_eq "$(cpus_of $qemu)" 2-3 "while running: CPUs of the QEMU stand-in"
expect_eq "$(cgroup_of $host)" /kvmtune.housekeeping "while running: cgroup of the host process"
expect_eq "$(cpus_of $host)" 0-1 "while running: CPUs of the host process"
expect_eq "$(cgroup_of $run)" /kvmtune.housekeeping "while running: cgroup of kvmtune run"
expect_eq "$(cpus_of $run)" 0-1 "while running: CPUs of kvmtune run"
"$KT" status > /tmp/status.out 2>&1
grep -q "\"s17-run\" (running, QEMU pid $qemu under kvmtune run)" /tmp/status.out \
  || fail "status does not show the VM with its QEMU: $(tr '\n' ';' < /tmp/status.out)"
grep -F 'still allowed:' /tmp/status.out && fail "status lists host tasks still allowed on 2-3"

kill -TERM $run
wait $run
rc=$?
expect_eq "$rc" 143 "exit status of kvmtune run after its QEMU stand-in ended by SIGTERM"
kill -0 $qemu 2>/dev/null && fail "the QEMU stand-in $qemu still runs"
[ -d $HK_CG ] && fail "after kvmtune run ended: $HK_CG still exists"
RELEASED_VMS="$RELEASED_VMS s17-run"
iso_expect_same /tmp/base "after kvmtune run ended"
check_state_clean
