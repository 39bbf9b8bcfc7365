# timeout: 240
# `virsh vcpupin --live` and `emulatorpin --live` while a vCPU's isolated partition holds CPU 3
# (what the kernel does, seen on 6.12, and what kvmtune makes of it):
# - the vCPU pinned to a housekeeping CPU: the kernel refuses its thread that CPU (EINVAL: the
#   partition holds it), virsh fails, the vCPU stays on CPU 3 and the partition holds;
# - pinned to CPU 3 and another: the partition still holds it to CPU 3 alone; status says the
#   pin is not one CPU until it is again;
# - the emulator pinned onto CPU 3: virsh fails, but the kernel has made the partition invalid
#   and keeps CPU 3 from every cgroup: a VM stopped so would leave CPU 3 isolated for good. The
#   watcher makes the partition a member within seconds (CPU 3 back, nothing to leak) and says
#   why; once the emulator is pinned back, the partition is made again.
# After the VM stops: everything as before, and a VM pinned to CPU 3 without isolation starts.
. /hv/guest/lib.sh
save_state /tmp/base
define hv-pin 27 vcpupin=3 emulatorpin=0 'tune=<kvmtune:isolate cpus="vcpus"/>'
define hv-after 28 vcpupin=3 emulatorpin=0
start hv-pin
vcpu0=$(find "$CG/machine.slice" -path '*hv\\x2dpin.scope/libvirt/vcpu0' -type d)
[ -n "$vcpu0" ] || fail "no vCPU cgroup of hv-pin"
state() { cat "$vcpu0/cpuset.cpus.partition"; }
state_is() { [ "$(state)" = "$1" ]; }
pid=$(qemu_pid hv-pin)
vcpu_cpus() {
  local t
  for t in /proc/$pid/task/*; do
    [ "$(cat "$t/comm")" = "CPU 0/TCG" ] && awk '/^Cpus_allowed_list:/{print $2}' "$t/status"
  done
}
keeps_promises() { kvmtune status > /dev/null 2>&1; }
state_is isolated || fail "vcpu0's partition reads '$(state)' at start"

# 1. To a housekeeping CPU: refused.
if virsh_ vcpupin hv-pin 0 2 --live > /tmp/pin.out 2>&1; then fail "vcpupin 0 2 --live succeeded while the partition holds CPU 3"; fi
note "vcpupin 0 2 --live: $(tr '\n' ' ' < /tmp/pin.out)"
[ "$(vcpu_cpus)" = 3 ] || fail "the vCPU thread may run on $(vcpu_cpus) after a refused vcpupin"
state_is isolated || fail "vcpu0's partition reads '$(state)' after a refused vcpupin"

# 2. To CPU 3 and another: the partition holds it to CPU 3; status says so.
virsh_ vcpupin hv-pin 0 2-3 --live || fail "vcpupin 0 2-3 --live failed"
[ "$(vcpu_cpus)" = 3 ] || fail "the vCPU thread may run on $(vcpu_cpus) with the partition of CPU 3"
says_two_cpus() { kvmtune status 2>&1 | grep -q "vcpu0/cpuset.cpus is 2-3 (isolated CPUs 3); pin each vCPU to one isolated CPU"; }
wait_for 10 "status does not say vcpu0 is pinned to two CPUs: $(kvmtune status 2>&1 | head -1)" says_two_cpus
virsh_ vcpupin hv-pin 0 3 --live || fail "vcpupin 0 3 --live failed"
wait_for 10 "status does not keep its promises again: $(kvmtune status 2>&1 | head -1)" keeps_promises
note "vcpupin 2-3 and back: the partition held"

# 3. The emulator onto CPU 3.
if virsh_ emulatorpin hv-pin 3 --live > /tmp/pin.out 2>&1; then fail "emulatorpin 3 --live succeeded while the partition holds CPU 3"; fi
note "emulatorpin 3 --live: $(tr '\n' ' ' < /tmp/pin.out)"
wait_for 30 "the watcher did not make the invalid partition a member: it reads '$(state)', the root's isolated CPUs '$(cat $CG/cpuset.cpus.isolated)'" state_is member
[ -z "$(cat $CG/cpuset.cpus.isolated)" ] || fail "CPU(s) $(cat $CG/cpuset.cpus.isolated) still isolated with the partition a member"
kvmtune status > /tmp/status.out 2>&1 && fail "status keeps its promises while the partition cannot be made"
# (The watcher tries again at every look: for a moment the partition may read invalid.)
grep -Eq "reads '(member|isolated invalid[^']*)', kvmtune set isolated" /tmp/status.out || fail "status does not say the partition is not isolated: $(head -1 /tmp/status.out)"
journalctl -q -u kvmtune-watch.service | grep -q "the kernel does not make CPUs 3 an isolated partition: Cpu list in cpuset.cpus not exclusive" \
  || fail "the watcher's log does not give the kernel's reason: $(journalctl -q -u kvmtune-watch.service | tail -2)"
note "the watcher made the invalid partition a member: $(head -1 /tmp/status.out)"
virsh_ emulatorpin hv-pin 0 --live || fail "emulatorpin 0 --live failed"
wait_for 30 "the watcher did not make the partition again once the emulator left CPU 3: it reads '$(state)'" state_is isolated
[ "$(cat $CG/cpuset.cpus.isolated)" = 3 ] || fail "the root's isolated CPUs read '$(cat $CG/cpuset.cpus.isolated)', not 3"
wait_for 10 "status does not keep its promises with the partition back: $(kvmtune status 2>&1 | head -1)" keeps_promises
left=$(tasks_on_cpu 3)
[ -z "$left" ] || { echo "$left"; fail "host tasks may run on CPU 3 with the partition back: $(echo "$left" | awk '{print $2}' | sort -u | tr '\n' ' ')"; }
note "emulator back on 0: the partition is made again"

stop hv-pin
expect_state /tmp/base "after the VM stopped"
[ -z "$(cat $CG/cpuset.cpus.isolated)" ] || fail "CPU(s) $(cat $CG/cpuset.cpus.isolated) still isolated after the VM stopped"
start hv-after
stop hv-after
note "a VM pinned to CPU 3 starts after"
