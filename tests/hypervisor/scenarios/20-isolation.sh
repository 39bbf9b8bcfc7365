# timeout: 180
# Isolation on systemd + cgroup v2 that holds for the VM's whole life. A VM with its vCPU
# pinned to CPU 3 and `isolate cpus="vcpus"` gets an isolated partition (kernel 6.12): its
# vCPU cgroup holds CPU 3 alone. While it runs, no host task that is not the
# VM's may run on CPU 3 (per-CPU kernel threads aside), and neither may anything started
# later: a service, a timer's service, a transient scope, a process in user.slice, a process
# libvirtd spawns. Each must be off CPU 3 within a second. A second VM pinned to CPU 1 (the
# other isolatable CPU) must still start while the first runs. After both stop: every unit
# property, cgroup file and file under /run/systemd as before.
. /hv/guest/lib.sh
save_state /tmp/base
tune='<kvmtune:isolate cpus="vcpus"/>'
define hv-iso 20 vcpupin=3 emulatorpin=0 "tune=$tune"
define hv-iso2 21 vcpupin=1 emulatorpin=0 "tune=$tune"
start hv-iso
note "isolated VM running; kvmtune status:"; kvmtune status | tee /tmp/status.out | sed 's/^/  /'
# Kernel 6.12 offers isolated partitions: the VM's vCPU cgroup is one, of CPU 3.
grep -q "method chosen: auto: the kernel offers isolated partitions" /tmp/status.out \
  || fail "status does not say the partition method was chosen: $(tr '\n' ';' < /tmp/status.out)"
vcpu0=$(find "$CG/machine.slice" -path '*hv\\x2diso.scope/libvirt/vcpu0' -type d)
[ -n "$vcpu0" ] || fail "no vCPU cgroup of hv-iso under $CG/machine.slice"
[ "$(cat "$vcpu0/cpuset.cpus.partition")" = isolated ] \
  || fail "$vcpu0/cpuset.cpus.partition reads '$(cat "$vcpu0/cpuset.cpus.partition")', not isolated"
[ "$(cat $CG/cpuset.cpus.isolated)" = 3 ] || fail "$CG/cpuset.cpus.isolated reads '$(cat $CG/cpuset.cpus.isolated)', not 3"
note "vCPU 0's cgroup is an isolated partition of CPU 3"

left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "host tasks may still run on CPU 3: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
note "no host task on CPU 3"

# late_off_cpu WHAT PIDFILE-COMMAND: the process must be off CPU 3 within a second.
off_cpu3() { local c; c=$(awk '/^Cpus_allowed_list:/{print $2}' "/proc/$1/status" 2>/dev/null) && [ -n "$c" ] && ! in_list "$c" 3; }
check_late() {
  local what=$1 pid=$2 ms
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || fail "harness: no process for $what"
  ms=$(wait_ms 1 "$what (pid $pid) may still run on CPU 3: $(awk '/^Cpus_allowed_list:/{print $2}' /proc/$pid/status)" off_cpu3 "$pid")
  note "$what: off CPU 3 after ${ms} ms ($(awk '/^Cpus_allowed_list:/{print $2}' /proc/$pid/status))"
}
# The late work: processes that stay until the scenario stops their units (sleep infinity is
# the workload, not a wait).
systemd-run --quiet --unit=hv-late sleep infinity || fail "systemd-run of a late service failed"
check_late "a service started later" "$(systemctl show -p MainPID --value hv-late.service)"
systemd-run --quiet --unit=hv-timer --on-active=1ms sleep infinity || fail "systemd-run of a timer failed"
wait_for 10 "the timer's service did not start" unit_has_pid hv-timer.service
check_late "a timer's service" "$(systemctl show -p MainPID --value hv-timer.service)"
systemd-run --quiet --scope --unit=hv-scope sleep infinity & scope_sh=$!
wait_for 10 "the scope did not start" systemctl is-active --quiet hv-scope.scope
# systemd-run --scope execs the command in place: the background job's PID is the scope's sleep.
check_late "a transient scope" "$scope_sh"
systemd-run --quiet --slice=user.slice --unit=hv-user sleep infinity || fail "systemd-run in user.slice failed"
check_late "a process in user.slice" "$(systemctl show -p MainPID --value hv-user.service)"
check_late "libvirtd" "$(systemctl show -p MainPID --value libvirtd.service)"

start hv-iso2
note "second isolated VM (CPU 1) started while the first runs"
left=$(tasks_on_cpu 1)
[ -z "$left" ] || { echo "$left"; fail "host tasks may still run on CPU 1 with both VMs: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }

stop hv-iso2
stop hv-iso
systemctl stop hv-late.service hv-timer.service hv-timer.timer hv-user.service hv-scope.scope 2>/dev/null
kill "$scope_sh" 2>/dev/null; wait 2>/dev/null
wait_for 10 "transient units still loaded" bash -c '! systemctl is-active --quiet hv-late.service hv-user.service hv-scope.scope'
expect_state /tmp/base "after both isolated VMs stopped"
