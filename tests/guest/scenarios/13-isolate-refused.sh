# topologies: 2node
# A VM may not isolate a housekeeping CPU: prepare fails with one line naming housekeeping and
# changes nothing; libvirt's stopped + `release end failed` after it change nothing either.
# (a) vCPUs pinned to 0 and 3, housekeeping 0-1; (b) an explicit list 0-1;
# (c) no policy file: housekeeping `auto` keeps 0 and 2, a VM pinned to 2-3 is refused.
. /tests/lib.sh
. /tests/isolation.sh
trap iso_cleanup EXIT

taskset -p -c 0-3 $$ >/dev/null
iso_start "host process" sleep 600
iso_snapshot /tmp/base

refused() {   # refused NAME XML WHAT
  hook_fails "$1" prepare begin - "$2"
  grep -qi housekeeping /tmp/hook.err || fail "$3: the error does not mention housekeeping: $(cat /tmp/hook.err)"
  iso_expect_same /tmp/base "$3: after the refused prepare"
  hook_ok "$1" stopped end - "$2"
  hook_ok "$1" release end failed "$2"
  RELEASED_VMS="$RELEASED_VMS $1"
  iso_expect_same /tmp/base "$3: after release end failed"
}

iso_policy 0-1
isodom /tmp/a.xml s13-cpu0 vcpus 0 3
refused s13-cpu0 /tmp/a.xml "(a) vcpus on 0,3"
isodom /tmp/b.xml s13-list 0-1 2 3
refused s13-list /tmp/b.xml "(b) list 0-1"
rm -rf /etc/kvmtune; unset KVMTUNE_CONFIG
isodom /tmp/c.xml s13-auto vcpus 2 3
refused s13-auto /tmp/c.xml "(c) default policy, vcpus on 2-3"
"$KT" status > /tmp/status.out 2>&1
grep -qx 'Isolation: none' /tmp/status.out || fail "kvmtune status does not say 'Isolation: none': $(grep -i isolat /tmp/status.out | tr '\n' ';')"
check_state_clean
