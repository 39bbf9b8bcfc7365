# topologies: 2node
# Two isolated VMs: A isolates CPU 3, B CPU 2 (housekeeping 0-1). Host tasks go to 0-2, then
# 0-1; releasing one VM gives back only its CPU; releasing both puts everything back. Both
# release orders. Here cpuset is already enabled at the root and a service cgroup has its own
# cpuset.cpus: kvmtune must leave the controller on and give the service its value back.
. /tests/lib.sh
. /tests/isolation.sh
trap iso_cleanup EXIT

taskset -p -c 0-3 $$ >/dev/null
grep -qw cpuset $CG/cgroup.subtree_control || echo +cpuset > $CG/cgroup.subtree_control ||
  fail "harness: cannot enable cpuset in $CG/cgroup.subtree_control"
iso_start "host process" sleep 600; host=$ISO_PID
iso_start "pinned host process" taskset -c 1 sleep 600; pinned=$ISO_PID
mkdir $CG/kt-svc && ISO_CGROUPS="$CG/kt-svc"
echo 0-3 > $CG/kt-svc/cpuset.cpus || fail "harness: cannot set kt-svc/cpuset.cpus"
iso_start "service process" sleep 600; svc=$ISO_PID
echo $svc > $CG/kt-svc/cgroup.procs || fail "harness: cannot move $svc into kt-svc"

iso_policy 0-1
isodom /tmp/a.xml s12-a vcpus 3 3
isodom /tmp/b.xml s12-b vcpus 2 2
iso_snapshot /tmp/base
cat /tmp/base.files

# round FIRST SECOND HK_AFTER_FIRST ISO_AFTER_FIRST: start A then B, stop FIRST then SECOND.
round() {
  local first=$1 second=$2 hk=$3 iso=$4 what
  what="round $first,$second"
  vm_start s12-a /tmp/a.xml
  iso_expect_isolated 0-2 3 "$what: A running"
  vm_start s12-b /tmp/b.xml
  iso_expect_isolated 0-1 2-3 "$what: A and B running"
  expect_eq "$(cpus_of $host)" 0-1 "$what: A and B running: CPUs of the host process"
  expect_eq "$(cat $CG/kt-svc/cpuset.cpus)" 0-1 "$what: A and B running: kt-svc/cpuset.cpus"
  expect_eq "$(cpus_of $svc)" 0-1 "$what: A and B running: CPUs of the service process"
  vm_stop s12-$first /tmp/$first.xml destroyed
  iso_expect_isolated $hk $iso "$what: $first released"
  expect_eq "$(cpus_of $host)" $hk "$what: $first released: CPUs of the host process"
  expect_eq "$(cat $CG/kt-svc/cpuset.cpus)" $hk "$what: $first released: kt-svc/cpuset.cpus"
  expect_eq "$(cpus_of $svc)" $hk "$what: $first released: CPUs of the service process"
  vm_stop s12-$second /tmp/$second.xml destroyed
  [ -d $HK_CG ] && fail "$what: both released: $HK_CG still exists"
  iso_expect_same /tmp/base "$what: both released"
}
round a b 0-1,3 2
round b a 0-2 3
check_state_clean
